"""`ray job submit` against a real two-node Ray cluster on loopback, logging to a real `sparsebench server` (issue 8,
item 2 and 3): the head advertises no CPUs (no trial runs there), a second raylet brings 2 CPUs, token
authentication is on, and the study is submitted exactly as the README shows. Afterwards the MLflow server holds
the parent and every trial with every epoch, the Tune results are in the storage given, the upload left out what
.rayignore excludes, and nothing was written into the working copy.

The worker raylet gets its own --temp-dir: two raylets of one machine would otherwise share the session's
runtime_resources folder, and the worker's runtime-env agent deletes the job's unpacked working_dir (the driver's
cwd) when its own trial workers release it. Machines of a real cluster never share that folder.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from workflows import tracking

pytestmark = [pytest.mark.ray, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd: list[str], env: dict, timeout: int = 300, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode:
        raise AssertionError(f"{' '.join(cmd)} exited {p.returncode}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Head (0 CPUs, dashboard on 127.0.0.1) + one worker raylet (2 CPUs) + an MLflow server, with a fresh HOME in
    which the README's first step, `ray get-auth-token --generate`, makes the token (`ray start` refuses to start
    without one when RAY_AUTH_MODE=token)."""
    base = tmp_path_factory.mktemp("cluster")
    home = base / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    gcs, dash, mlflow_port = free_port(), free_port(), free_port()
    run([RAY, "stop", "--force"], env, check=False)
    # Short: Ray's unix sockets live under it and their paths may not exceed 107 bytes.
    worker_tmp = Path(tempfile.mkdtemp(prefix="rw", dir="/tmp"))
    server = None
    try:
        run([RAY, "get-auth-token", "--generate"], env)
        run([RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(gcs), "--num-cpus", "0",
             "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash)], env)
        run([RAY, "start", "--address", f"127.0.0.1:{gcs}", "--node-ip-address", "127.0.0.1", "--num-cpus", "2",
             "--temp-dir", str(worker_tmp)], env)
        server_dir = base / "server"
        server_dir.mkdir()
        server = subprocess.Popen([sys.executable, "-m", "workflows", "server", "--port", str(mlflow_port),
                                   "--workers", "2"], cwd=server_dir, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{mlflow_port}"
        for _ in range(120):
            try:
                if urllib.request.urlopen(f"{url}/health", timeout=2).read().strip() == b"OK":
                    break
            except OSError:
                time.sleep(1)
        else:
            raise AssertionError("the MLflow server did not come up in 120 s")
        yield {"env": env, "dashboard": f"http://127.0.0.1:{dash}", "mlflow": url, "base": base, "home": home,
               "server_dir": server_dir}
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        run([RAY, "stop", "--force"], env, check=False)
        shutil.rmtree(worker_tmp, ignore_errors=True)


def test_job_submit_logs_every_trial_to_the_server_and_results_to_the_storage(cluster):
    env, storage = cluster["env"], cluster["base"] / "ray_results"
    assert (cluster["home"] / ".ray" / "auth_token").is_file()      # token auth on, with the token made for it
    before = {p.name for p in REPO.iterdir()}
    cmd = [RAY, "job", "submit", "--address", cluster["dashboard"], "--working-dir", ".", "--",
           "python", "-m", "workflows", "search", "--methods", "dense", "--num-samples", "2", "--epochs", "2",
           "--tracking-uri", cluster["mlflow"], "--storage", str(storage)]
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0 and "succeeded" in p.stdout + p.stderr, (p.stdout[-4000:], p.stderr[-4000:])

    client = MlflowClient(tracking_uri=cluster["mlflow"])
    exp = client.get_experiment_by_name("search/digits")
    runs = client.search_runs([exp.experiment_id])
    kinds = sorted(r.data.tags[tracking.TAG_KIND] for r in runs)
    assert kinds == ["parent", "trial", "trial"]
    assert all(r.info.status == "FINISHED" for r in runs)
    for r in runs:
        if r.data.tags[tracking.TAG_KIND] == "trial":
            history = client.get_metric_history(r.info.run_id, "val_acc")
            assert sorted(m.step for m in history) == [1, 2]           # every epoch, once
    # Tune's results went to the storage given; the server keeps the store in its own folder; the working copy
    # got no mlflow.db, ray_results or mlruns.
    assert any(storage.glob("dense-digits-*/experiment_state-*.json"))
    assert (cluster["server_dir"] / "mlflow.db").is_file()
    assert {p.name for p in REPO.iterdir()} == before


    # The job unpacked its working_dir in the head's session folder (the worker raylet has its own --temp-dir):
    # the code is there, and nothing .rayignore excludes.
    pkgs = [p for p in Path("/tmp/ray/session_latest/runtime_resources/working_dir_files").glob("_ray_pkg_*")
            if p.is_dir()]
    assert pkgs, "no unpacked working_dir found"
    pkg = max(pkgs, key=lambda p: p.stat().st_mtime)
    names = {p.name for p in pkg.iterdir()}
    assert {"methods", "workflows", "search_spaces", "pyproject.toml"} <= names
    assert not names & {".git", "mlruns", "mlflow.db", "ray_results", "build", "reproductions"}, names
    assert not list(pkg.rglob("*.pt")) and not list(pkg.rglob("__pycache__"))
