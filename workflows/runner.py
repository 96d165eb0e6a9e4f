"""The one Tuner runner: what `search` and `reproduce` share to run trials on Ray Tune under an MLflow parent run.

- `RunnerSettings`: the resources, stores and checkpoint cadence both commands take (one CLI option group,
  workflows/cli.py `runner_options`).
- `init_ray`, `check_resources`, `check_storage`: the cluster and the storage, checked before anything starts.
- `fit`: the shared trainable (workflows/trainable.py) with its resources, the per-trial MLflow callback, Tune's
  result logs, checkpoints and retries; a rerun of the same study restores it (`Tuner.restore`), so finished trials
  are not rerun.
- `under_parent`: the interrupt skeleton. A crash marks the open trial runs and the parent FAILED; Ctrl-C (Tune
  returns normally) leaves trial runs open, which are then marked KILLED, and the caller marks the parent KILLED
  and raises `SearchInterrupted` (exit 130 at the CLI).
"""
from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import ray
from ray import tune

from . import failpoints, ray_job, tracking
from .checkpointing import CHECKPOINT_SECONDS
from .errors import ResourceError, SearchInterrupted  # noqa: F401  (re-exported for the commands)
from .trainable import run_config_from, trainable


@dataclass(frozen=True, kw_only=True)
class RunnerSettings:
    """What every command that runs trials takes: resources per trial, the stores, the checkpoint cadence."""

    max_concurrent: int = 0          # 0: as many as the cluster's resources allow
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    tracking_uri: str = ""           # default: sqlite:///mlflow.db in the working directory
    storage: str = ""                # Tune's storage; default ./ray_results
    checkpoint_seconds: float = CHECKPOINT_SECONDS  # a trial checkpoints at most this often (0: every epoch)

    @property
    def uri(self) -> str:
        return self.tracking_uri or tracking.default_tracking_uri()

    @property
    def storage_path(self) -> str:
        if self.storage and "://" in self.storage:
            return self.storage
        return str(Path(self.storage or "ray_results").resolve())


def quiet() -> None:
    """Our own one line per trial replaces the libraries' progress output."""
    import optuna

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Tune snapshots its state whenever a trial has checkpointed num_to_keep times; that is intended here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


# A function trainable's thread waits at every `tune.report` until the driver has processed that result and asked
# the actor for the next: a round trip per epoch, 33 ms on two busy cores against a 212 ms epoch
# (benchmarks/orchestration.py). With a result buffer the actor collects at least this long before it sends
# (Tune's TuneController._maybe_buffer_training and Trainable.train_buffered). The driver still processes every
# epoch's result in order (ASHA, Optuna, MLflow); a result with a checkpoint is sent at once; a trial ASHA stops
# trains on for at most this long. Tune turns buffering off for schedulers that cannot take it (HyperBand).
REPORT_BUFFER_SECONDS = 1.0


def tune_defaults() -> None:
    """Environment read by Tune's controller when a Tuner starts; a value the user set is kept."""
    os.environ.setdefault("TUNE_RESULT_BUFFER_LENGTH", "1000")
    os.environ.setdefault("TUNE_RESULT_BUFFER_MIN_TIME_S", str(REPORT_BUFFER_SECONDS))
    # Tune's automatic loggers include TensorBoardX, which took about a third of the driver's CPU per result in a
    # py-spy profile of benchmarks/orchestration.py; MLflow is this project's record. The JSON and CSV logs stay
    # (result_loggers).
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")


# Tune saves its experiment state (trial statuses, their latest checkpoints) every 10 s or more, and at once after a
# trial has registered `num_to_keep` checkpoints (ray/tune/execution/experiment_state.py, on_trial_checkpoint).
# With one, every checkpoint, the final one included, is recorded at once: a driver killed just after a trial
# finished finds it finished or at its final checkpoint, and trains none of its epochs again. Tune registers a
# checkpoint only once it is written in full, so the latest is enough.
CHECKPOINTS = tune.CheckpointConfig(num_to_keep=1)
MAX_FAILURES = 2  # retries of a trial whose worker died, each from its last checkpoint


def result_loggers() -> list:
    """Tune's per-trial result.json and progress.csv in the storage, without its TensorBoard events."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    return [JsonLoggerCallback(), CSVLoggerCallback()]


def init_ray(num_cpus: int | None = None) -> None:
    """Connect to `$RAY_ADDRESS` when set, else start a local Ray bound to loopback."""
    quiet()
    tune_defaults()
    if ray.is_initialized():
        return
    # Methods kept outside the package (methods/families/__init__.py) must be discovered in every worker too.
    # So must a fault test's hold points (workflows/failpoints.py).
    # Those a job's runtime env already carries reach the workers through it (ray_job.driver_env_vars).
    env = ray_job.driver_env_vars(("SPARSEBENCH_METHOD_PATH", *failpoints.ENV_VARS))
    runtime_env = {"env_vars": env} if env else None
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False, runtime_env=runtime_env)
    else:
        # address="local": a new instance even where an earlier `ray start` left /tmp/ray/ray_current_cluster
        # behind, which ray.init() with no address would try to join (ray/_private/services.py,
        # get_ray_address_from_environment) and, the cluster being gone, fail on after minutes of retries.
        ray.init(address="local", _node_ip_address="127.0.0.1", dashboard_host="127.0.0.1", include_dashboard=False,
                 num_cpus=num_cpus, log_to_driver=False, configure_logging=True, logging_level="warning",
                 runtime_env=runtime_env)


def check_resources(s: RunnerSettings) -> None:
    """A trial asking for more than any node has would wait forever: refuse it instead."""
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    most_cpu = max((n.get("CPU", 0) for n in nodes), default=0)
    most_gpu = max((n.get("GPU", 0) for n in nodes), default=0)
    if s.cpus_per_trial > most_cpu:
        raise ResourceError(f"--cpus-per-trial {s.cpus_per_trial:g}: the largest Ray node has {most_cpu:g} CPUs")
    if s.gpus_per_trial > most_gpu:
        raise ResourceError(f"--gpus-per-trial {s.gpus_per_trial:g}: the largest Ray node has {most_gpu:g} GPUs")


def check_storage(storage: str) -> None:
    """A local storage folder must be creatable; checked without creating anything that stays."""
    if "://" in storage:
        return  # remote storage (s3://, gs://, ...) is checked by Tune itself
    path = Path(storage)
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise tracking.StoreError(f"--storage {storage}: {existing} is not a folder")
    try:  # os.access lies for root on read-only file systems: try a transient folder instead
        os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".sparsebench-check-"))
    except OSError as e:
        raise tracking.StoreError(f"--storage {storage}: cannot create it ({existing}: {e.strerror})") from None


def check_stores(s: RunnerSettings) -> None:
    check_storage(s.storage_path)
    tracking.check_store(s.uri)  # last: opening SQLite creates the file


def experiment_path(s: RunnerSettings, name: str) -> str:
    """Where Tune keeps the experiment `name` (a rerun restores it from there)."""
    return f"{s.storage_path.rstrip('/')}/{name}"


def restorable(s: RunnerSettings, name: str) -> bool:
    """True when `fit(name, s, ...)` will restore a Tune experiment rather than start one."""
    return tune.Tuner.can_restore(experiment_path(s, name))


def fit(name: str, s: RunnerSettings, decode: Callable[[dict], dict], callback, *, param_space: dict | None = None,
        echo: bool = True, keep_model: bool = False, **tune_config: Any):
    """Run (or, when Tune has it in the storage, restore and finish) the Tune experiment `name` of the shared
    trainable; `tune_config` adds to the TuneConfig (search_alg, scheduler, num_samples); `keep_model`: each trial's
    final checkpoint holds its trained network (trainable.save_model)."""
    # Ours, never Tune's own ray.init() (ray/tune/tune.py, _ray_auto_init): that one joins whatever cluster
    # /tmp/ray/ray_current_cluster names, e.g. one a `ray start` left behind (a final stage called from the Python
    # API, with no search before it, hung so).
    init_ray()
    fn = tune.with_resources(tune.with_parameters(trainable, decode=decode, checkpoint_seconds=s.checkpoint_seconds,
                                                  keep_model=keep_model),
                             {"cpu": s.cpus_per_trial, "gpu": s.gpus_per_trial})
    path = experiment_path(s, name)
    if tune.Tuner.can_restore(path):
        # A rerun of the same command (e.g. after the driver was killed): finished trials are kept.
        if echo:
            print(f"  restoring study {name} from {path}", flush=True)
        return tune.Tuner.restore(path, trainable=fn, resume_unfinished=True, resume_errored=True).fit()
    return tune.Tuner(
        fn,
        param_space=param_space,
        tune_config=tune.TuneConfig(max_concurrent_trials=s.max_concurrent or None, reuse_actors=True,
                                    trial_dirname_creator=lambda t: f"{t.trial_id}_{run_config_from(decode(t.config)).hash()}",
                                    **tune_config),
        run_config=tune.RunConfig(name=name, storage_path=s.storage_path, callbacks=[callback, *result_loggers(), *failpoints.callbacks()],
                                  verbose=0, checkpoint_config=CHECKPOINTS,
                                  failure_config=tune.FailureConfig(max_failures=MAX_FAILURES)),
    ).fit()


def under_parent(c, exp_id: str, parent: str, run: Callable[[], Any], only: Callable | None = None):
    """`run()` (a `fit`) with the parent run's bookkeeping; returns (its result, trial runs closed as KILLED,
    the children's statuses). `only` limits the closing to this command's runs (another driver's stay open)."""
    try:
        grid = run()
    except BaseException:
        tracking.close_open_children(c, exp_id, parent, "FAILED", only=only)
        c.set_terminated(parent, status="FAILED")
        raise
    # Tune returns normally after Ctrl-C: trials still open then did not finish.
    killed, statuses = tracking.close_open_children(c, exp_id, parent, "KILLED", only=only)
    return grid, killed, statuses
