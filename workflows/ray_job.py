"""What a Ray job (`ray job submit`) gives its driver: its runtime env, and the data files shipped inside its
working dir, named so that every node finds its own copy.

`ray job submit --working-dir .` uploads the folder once; every node unpacks it into its own Ray session folder
(`<temp dir>/session_<name>/runtime_resources/working_dir_files/_ray_pkg_<hash>/`,
ray/_private/runtime_env/working_dir.py) and starts the job's driver and workers there. The absolute path the driver
sees is therefore only valid on nodes started with the same `--temp-dir`. A file inside the working dir is passed
to the trials relative to it instead, and each trial resolves it against its own node's copy: the folder its worker
started in, which Ray Tune records in `TUNE_ORIG_WORKING_DIR` before moving the trial into its trial folder
(ray/tune/trainable/trainable.py, Trainable.__init__). Any other file keeps its absolute path (a filesystem every
node mounts). docs/cluster.md, "Your data on the cluster".

No Ray import: the driver's checks run before Ray starts.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

JOB_CONFIG_VAR = "RAY_JOB_CONFIG_JSON_ENV_VAR"   # set by Ray's job supervisor for the job's driver (job_supervisor.py)
ORIG_DIR_VAR = "TUNE_ORIG_WORKING_DIR"           # set by Tune in each trial's worker


def job_runtime_env() -> dict:
    """The runtime env of the Ray job this driver runs in (`--working-dir`, `--runtime-env-json`); {} outside a job."""
    text = os.environ.get(JOB_CONFIG_VAR)
    if not text:
        return {}
    try:
        env = json.loads(text).get("runtime_env") or {}
    except (ValueError, AttributeError):
        return {}
    return env if isinstance(env, dict) else {}


def driver_env_vars(names) -> dict[str, str]:
    """Those of `names` set here that the driver must pass to its workers itself (ray.init's runtime_env): the ones
    the job's runtime env does not already carry to them. Ray refuses to merge a job's runtime env with a driver's
    that names the same variable ("Failed to merge the Job's runtime env", ray/_private/worker.py)."""
    carried = job_runtime_env().get("env_vars") or {}
    return {k: os.environ[k] for k in names if os.environ.get(k) and k not in carried}


def job_working_dir() -> Path | None:
    """The unpacked working dir of the Ray job this driver runs in (its working directory), or None outside a job
    or in a job submitted without `--working-dir`."""
    return Path.cwd().resolve() if job_runtime_env().get("working_dir") else None


def driver_path(text: str) -> str:
    """A data file as the trials get it: relative to the job's working dir when it lies inside one, else absolute
    (Ray Tune runs each trial in a folder of its own, where a relative path would not be found)."""
    path = Path(text).expanduser().resolve()
    root = job_working_dir()
    if root is not None and path.is_relative_to(root):
        return path.relative_to(root).as_posix()
    return str(path)


def node_path(text: str) -> str:
    """The driver's name for a data file, on the node this trial runs on: a relative name is resolved against the
    folder the worker started in (this node's copy of the job's working dir); an absolute one is left as it is."""
    if not text or Path(text).is_absolute():
        return text
    return str(Path(os.environ.get(ORIG_DIR_VAR) or os.getcwd()) / text)
