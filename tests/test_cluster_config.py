"""cluster.yaml and .rayignore, checked offline with Ray's own code (issue 8, items 1, 2 and 6).

No cloud account, no network: the cluster config goes through the steps `ray up` takes before it talks
to a provider (ray.autoscaler._private.util.prepare_config + validate_config against the installed
ray-schema.json), and the working-directory upload goes through the client code of `ray job submit`
(JobSubmissionClient._upload_working_dir_if_needed) with only the HTTP request replaced.
"""

import copy
import fnmatch
import io
import json
import re
import shlex
import shutil
import subprocess
import zipfile
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"
RAYIGNORE = ROOT / ".rayignore"
LOCAL_BEGIN = "# ---- BEGIN on-premise variant (provider: local) ----"
LOCAL_END = "# ---- END on-premise variant ----"


def aws_config() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def local_config() -> dict:
    """The commented on-premise block, uncommented: every line must be '#' or start with '# '."""
    lines = CLUSTER_YAML.read_text().splitlines()
    assert lines.count(LOCAL_BEGIN) == 1 and lines.count(LOCAL_END) == 1, (
        f"cluster.yaml needs exactly one {LOCAL_BEGIN!r} and one {LOCAL_END!r} line")
    begin, end = lines.index(LOCAL_BEGIN), lines.index(LOCAL_END)
    assert begin < end, "the on-premise block ends before it begins"
    body = []
    for number, line in enumerate(lines[begin + 1:end], start=begin + 2):
        if line == "#":
            body.append("")
        elif line.startswith("# "):
            body.append(line[2:])
        else:
            raise AssertionError(f"cluster.yaml:{number} in the on-premise block is not commented "
                                 f"with '# ': {line!r}")
    config = yaml.safe_load("\n".join(body))
    assert isinstance(config, dict), "the uncommented on-premise block is not a YAML mapping"
    return config


VARIANTS = {"aws": aws_config, "local": local_config}


def start_args(command: str) -> dict:
    """The --flag=value options of the `ray start` in one shell command line."""
    segment = next(s for s in command.split(";") if "ray start" in s)
    words = shlex.split(segment)
    options = words[words.index("start") + 1:]
    return dict(o[2:].split("=", 1) if "=" in o else (o[2:], True) for o in options if o.startswith("--"))


def ray_start_commands(config: dict, key: str) -> list:
    commands = [c for c in config.get(key, []) if "ray start" in c]
    assert commands, f"{key} has no `ray start` command"
    return commands


def rayignore_patterns() -> list:
    return [line.strip() for line in RAYIGNORE.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


# ---------------------------------------------------------------------------------------------------
# Validation with Ray's own schema and preparation code
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_config_validates_as_ray_up_would(variant):
    config = VARIANTS[variant]()
    assert config["cluster_name"] == "sparsebench"
    # `ray up` validates the config after prepare_config (defaults of the provider merged in); the
    # AWS resource autodetection and provider bootstrap that follow need credentials and are skipped.
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    if variant == "aws":
        validate_config(copy.deepcopy(config))  # also complete on its own, before any defaults
        assert config["provider"]["type"] == "aws"
    else:
        assert config["provider"]["type"] == "local"
        assert "available_node_types" not in config, "the local provider rejects node types"
        node_type = prepared["available_node_types"][prepared["head_node_type"]]
        assert node_type["max_workers"] == len(config["provider"]["worker_ips"]) >= 1


@pytest.mark.parametrize("break_it", ["misspelt key", "negative CPU", "head type missing"])
def test_validation_rejects_a_broken_config(break_it):
    """The validation used above is not a no-op: it rejects each of these edits of cluster.yaml."""
    config = aws_config()
    if break_it == "misspelt key":
        config["idle_timeout_minute"] = 5
    elif break_it == "negative CPU":
        config["available_node_types"][config["head_node_type"]]["resources"]["CPU"] = -1
    else:
        config["head_node_type"] = "no_such_type"
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        validate_config(prepare_config(config))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_command_list_is_set_so_no_ray_default_leaks_in(variant):
    """prepare_config fills missing keys from Ray's provider defaults (aws/defaults.yaml installs a
    nightly Ray wheel and starts the dashboard on 0.0.0.0); every command list must be our own."""
    config = VARIANTS[variant]()
    for key in ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
                "head_start_ray_commands", "worker_start_ray_commands"):
        assert key in config, f"{variant}: {key} is not set, Ray's default would be used"
    text = json.dumps(prepare_config(config))
    assert "ray-wheels" not in text and "0.0.0.0" not in text


# ---------------------------------------------------------------------------------------------------
# Head without trials, GPU workers, pinned image
# ---------------------------------------------------------------------------------------------------

def test_aws_head_advertises_no_cpu_and_no_gpu(monkeypatch):
    config = aws_config()
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"].get("CPU") == 0, "the head must advertise 0 CPUs so Tune places no trial there"
    assert head["resources"].get("GPU", 0) == 0
    assert head.get("max_workers") == 0, "no extra nodes of the head's type"
    # The autoscaler hands these resources to `ray start` as RAY_OVERRIDE_RESOURCES (updater.py); resolve
    # them the way the raylet does and check they come out as --num-cpus=0 --num-gpus=0 would.
    from ray._private.resource_and_label_spec import ResourceAndLabelSpec
    monkeypatch.setenv("RAY_OVERRIDE_RESOURCES", json.dumps(head["resources"]))
    spec = ResourceAndLabelSpec().resolve(is_head=True, node_ip_address="127.0.0.1")
    assert (spec.num_cpus, spec.num_gpus) == (0, 0)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_head_start_command_keeps_trials_off_the_head(variant):
    # The local provider does not pass node resources to `ray start`: the flag itself must say it.
    (command,) = ray_start_commands(VARIANTS[variant](), "head_start_ray_commands")
    args = start_args(command)
    assert "head" in args
    assert args.get("num-cpus") == "0" and args.get("num-gpus") == "0", command


def test_aws_gpu_worker_type_declares_its_gpu():
    config = aws_config()
    workers = {name: t for name, t in config["available_node_types"].items() if name != config["head_node_type"]}
    assert workers, "no worker node type"
    for name, node_type in workers.items():
        assert node_type["resources"].get("GPU", 0) >= 1, f"{name} declares no GPU"
        assert node_type["resources"].get("CPU", 0) >= 1, f"{name} declares no CPU"
        assert node_type.get("min_workers", 0) == 0, f"{name} should scale from zero"
        assert 1 <= node_type["max_workers"] <= config["max_workers"]
    assert config["idle_timeout_minutes"] > 0


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_images_are_rays_own_pinned_to_the_installed_version(variant):
    docker = VARIANTS[variant]()["docker"]
    tag = re.compile(rf"rayproject/ray:{re.escape(ray.__version__)}-py3\d+-(cpu|gpu|cu\d+)")
    images = {k: docker[k] for k in ("image", "head_image", "worker_image") if k in docker}
    assert images, "no docker image"
    for key, image in images.items():
        assert tag.fullmatch(image), f"docker.{key} = {image!r} is not rayproject/ray:{ray.__version__}-pyXY-..."
    worker_image = docker.get("worker_image", docker.get("image"))
    assert re.search(r"-(gpu|cu\d+)$", worker_image), f"workers need a GPU image, got {worker_image!r}"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_setup_installs_this_package_from_the_mounted_checkout(variant):
    config = VARIANTS[variant]()
    assert config["file_mounts"].get("~/sparsebench") == "."
    assert any("~/sparsebench" in c and ("install.sh" in c or "pip install" in c) for c in config["setup_commands"])
    assert any("torch.cuda.is_available()" in c for c in config["worker_setup_commands"]), (
        "GPU workers should fail their setup when torch cannot see the GPU")


# ---------------------------------------------------------------------------------------------------
# Security defaults: dashboard on loopback, token auth everywhere, no credentials
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_dashboard_binds_to_loopback(variant):
    (command,) = ray_start_commands(VARIANTS[variant](), "head_start_ray_commands")
    assert start_args(command).get("dashboard-host") == "127.0.0.1", command


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_token_auth_on_head_and_workers(variant):
    config = VARIANTS[variant]()
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        for command in ray_start_commands(config, key):
            segment = next(s for s in command.split(";") if "ray start" in s)
            assert re.match(r"\s*(export\s+)?RAY_AUTH_MODE=token\s+ray start\b", segment), (
                f"{key}: RAY_AUTH_MODE=token is not set for {command!r}")
    # the token file travels by file_mounts (rsync over SSH), never as a value in this file
    assert config["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token"


FORBIDDEN = {
    "AWS access key id": r"AKIA[0-9A-Z]{16}",
    "AWS secret key name": r"(?i)aws_secret_access_key",
    "AWS session token": r"(?i)aws_session_token",
    "password": r"(?i)password",
    "private key block": r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
    "Ray token value": r"RAY_AUTH_TOKEN\s*[=:]",
    "hex secret (the form of a Ray token)": r"\b[0-9a-fA-F]{32,}\b",
    "base64 secret (the form of an AWS secret key)": r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{40,}",
}


@pytest.mark.parametrize("what", sorted(FORBIDDEN))
def test_no_credentials_in_cluster_yaml(what):
    text = CLUSTER_YAML.read_text()
    match = re.search(FORBIDDEN[what], text)
    assert match is None, f"cluster.yaml contains a {what}: {match.group(0)!r}"


def test_no_credential_fields_and_not_the_local_token():
    text = CLUSTER_YAML.read_text()
    for config in (aws_config(), local_config()):
        provider_keys = set(config["provider"])
        assert not provider_keys & {"aws_credentials", "gcp_credentials", "subscription_id"}, provider_keys
        private_key = config.get("auth", {}).get("ssh_private_key", "")
        assert "\n" not in private_key, "auth.ssh_private_key must be a path, not a key"
    token_file = Path.home() / ".ray" / "auth_token"
    if token_file.is_file() and token_file.read_text().strip():
        leaked = token_file.read_text().strip() in text  # a bare bool, so a failure never prints the token
        assert not leaked, "cluster.yaml contains the value of ~/.ray/auth_token"


# ---------------------------------------------------------------------------------------------------
# What leaves the laptop: `ray job submit --working-dir .` and `ray up` file_mounts
# ---------------------------------------------------------------------------------------------------

KEEP = {
    "methods/a.py", "workflows/b.py", "workflows/papers/p.yaml", "search_spaces/c.yaml", "scripts/install.sh",
    "tests/test_x.py", "benchmarks/orchestration.py", "pyproject.toml", "README.md", "cluster.yaml",
    ".rayignore", ".gitignore",
}
DROP = {
    "mlflow.db", "mlflow.db-journal", "mlruns/0/meta.yaml", "mlartifacts/1/plot.png",
    "ray_results/study/trial_1/result.json", "ray_results/study/trial_1/checkpoint_000001/state.pkl",
    "reproductions/lp_sphere/table.csv", "data/mnist.gz", "data/fashion/train.npz", "datasets/uci/x.mat",
    "archive.zip", "bundle.tar.gz", "ckpt.pt", "weights.pth", "model.ckpt", "checkpoint_000003/state.pkl",
    "methods/nested.pt", ".git/HEAD", ".git/objects/ab/cdef", "build/lib/methods/a.py",
    "dist/sparsebench-0.1.0.tar.gz", "sparsebench.egg-info/PKG-INFO", "methods/__pycache__/a.cpython-311.pyc",
    ".pytest_cache/v/cache/nodeids", ".benchmarks/Linux/0001.json", ".venv/bin/python", "venv/lib/x.py",
    ".env",
}


@pytest.fixture
def fake_checkout(tmp_path):
    root = tmp_path / "checkout"
    for rel in sorted(KEEP | DROP):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"content of {rel}\n")
    shutil.copyfile(RAYIGNORE, root / ".rayignore")
    shutil.copyfile(ROOT / ".gitignore", root / ".gitignore")
    return root


def files_under(root: Path) -> set:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def uploaded_by_job_submit(working_dir: Path) -> set:
    """The files `ray job submit --working-dir <dir>` packs, via the client's own upload method."""
    from ray.dashboard.modules.job.sdk import JobSubmissionClient

    sent = []

    def fake_request(method, endpoint, *, data=None, json_data=None, **kwargs):
        if method == "GET":  # "does the cluster already have this package?"
            return SimpleNamespace(status_code=404, text="")
        sent.append(data)
        return SimpleNamespace(status_code=200, text="")

    client = object.__new__(JobSubmissionClient)  # no address, no connection
    client._do_request = fake_request
    runtime_env = {"working_dir": str(working_dir)}
    client._upload_working_dir_if_needed(runtime_env)
    assert len(sent) == 1 and runtime_env["working_dir"].startswith("gcs://"), runtime_env
    return {n for n in zipfile.ZipFile(io.BytesIO(sent[0])).namelist() if not n.endswith("/")}


@pytest.mark.parametrize("mode", ["ray defaults", "rayignore alone"])
def test_job_submit_uploads_code_and_config_only(fake_checkout, monkeypatch, mode):
    if mode == "rayignore alone":
        # .gitignore switched off and Ray's built-in excludes (.git, venv, __pycache__) emptied:
        # .rayignore must keep everything out by itself.
        monkeypatch.setenv("RAY_RUNTIME_ENV_IGNORE_GITIGNORE", "1")
        monkeypatch.setenv("RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES", "")
    else:
        monkeypatch.delenv("RAY_RUNTIME_ENV_IGNORE_GITIGNORE", raising=False)
        monkeypatch.delenv("RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES", raising=False)
    uploaded = uploaded_by_job_submit(fake_checkout)
    assert KEEP - uploaded == set(), "code or config left out of the upload"
    assert uploaded & DROP == set(), "uploaded what must stay on the laptop"
    assert uploaded == KEEP


def test_rsync_excludes_are_the_rayignore_lines():
    """One list, two readers: rsync (ray up file_mounts) and gitignore syntax (job uploads). Patterns
    without an inner '/' or a '!' mean the same to both."""
    patterns = rayignore_patterns()
    assert len(patterns) == len(set(patterns))
    for pattern in patterns:
        assert "/" not in pattern.rstrip("/") and not pattern.startswith("!"), pattern
    for name, load in VARIANTS.items():
        config = load()
        assert config["rsync_exclude"] == patterns, f"{name}: rsync_exclude differs from .rayignore"
        assert ".rayignore" in config["rsync_filter"]


def rsync_would_skip(rel: str, patterns: list) -> bool:
    """rsync's rule for an exclude pattern with no inner '/': it is matched against each name on the path
    ('*' never crosses '/'), a trailing '/' matches directories only, and an excluded directory is not
    entered."""
    parts = rel.split("/")
    for depth, name in enumerate(parts):
        is_dir = depth < len(parts) - 1
        for pattern in patterns:
            if pattern.endswith("/") and not is_dir:
                continue
            if fnmatch.fnmatchcase(name, pattern.rstrip("/")):
                return True
    return False


@pytest.mark.parametrize("reader", ["rsync", "rsync rules"])
def test_ray_up_file_mount_excludes(fake_checkout, tmp_path, reader):
    from ray.autoscaler._private.command_runner import SSHCommandRunner

    config = aws_config()
    options = {"rsync_exclude": config["rsync_exclude"], "rsync_filter": config["rsync_filter"]}
    # The arguments `ray up` hands to rsync, built by Ray's own command runner.
    args = SSHCommandRunner._create_rsync_filter_args(object.__new__(SSHCommandRunner), options)
    assert args.count("--exclude") == len(config["rsync_exclude"])
    if reader == "rsync":
        if shutil.which("rsync") is None:
            pytest.skip("rsync is not installed")
        target = tmp_path / "node"
        subprocess.run(["rsync", "-a", *args, f"{fake_checkout}/", f"{target}/"], check=True)
        synced = files_under(target)
    else:
        excludes = [args[i + 1] for i, a in enumerate(args) if a == "--exclude"]
        synced = {rel for rel in files_under(fake_checkout) if not rsync_would_skip(rel, excludes)}
    assert synced == KEEP


# Files `ray up` syncs itself through the same rsync options: its SSH key (AWS's generated one is
# ~/.ssh/ray-autoscaler_<region>.pem, aws/config.py key_pair), the bootstrap config and the Ray token.
BOOTSTRAP_FILES = ["ray-autoscaler_us-west-2.pem", "ray-autoscaler_1_us-west-2.pem", "my-key.pem", "id_ed25519",
                   "auth_token", "ray-bootstrap-k3x9q2"]


@pytest.mark.parametrize("reader", ["rsync", "rsync rules"])
def test_ray_up_still_syncs_its_own_bootstrap_files(tmp_path, reader):
    from ray.autoscaler._private.command_runner import SSHCommandRunner

    config = aws_config()
    options = {"rsync_exclude": config["rsync_exclude"], "rsync_filter": config["rsync_filter"]}
    args = SSHCommandRunner._create_rsync_filter_args(object.__new__(SSHCommandRunner), options)
    if reader == "rsync" and shutil.which("rsync") is None:
        pytest.skip("rsync is not installed")
    for name in BOOTSTRAP_FILES:
        if reader == "rsync":
            source, target = tmp_path / "src" / name, tmp_path / "dst" / name
            source.parent.mkdir(exist_ok=True)
            target.parent.mkdir(exist_ok=True)
            source.write_text("x\n")
            # one file named on the command line, as updater.sync_file_mounts does for a file mount
            subprocess.run(["rsync", "-a", *args, str(source), str(target)], check=True)
            assert target.is_file(), f"rsync_exclude keeps `ray up` from copying {name}"
        else:
            excludes = [args[i + 1] for i, a in enumerate(args) if a == "--exclude"]
            assert not rsync_would_skip(name, excludes), f"rsync_exclude keeps `ray up` from copying {name}"
