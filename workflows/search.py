"""`sparsebench search`: one Optuna study per method, scheduled by Ray Tune with ASHA, recorded in MLflow.

Each method gets its own study with the same trial budget, so that the comparison is fair (a joint study
where the method is a categorical choice would give the best-looking method most trials). The studies run
one after another on the same Ray cluster, each using all of it.

A study's name is derived from the hash of everything that defines it (method, dataset, epochs, search
space, budget, seed, scheduler), so rerunning the same command finds the same study: its Tune experiment
is restored (finished trials are not rerun) and its MLflow parent run is reopened.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from methods import RunConfig
from methods.data import load_dataset

from . import tracking
from .checkpointing import CHECKPOINT_SECONDS
from .search_space import SearchSpace, load_search_space
from .trainable import run_config_from, trainable
from .trial import MlflowTrialCallback

METRIC, MODE = "val_acc", "max"


@dataclass(frozen=True)
class SearchSettings:
    methods: tuple[str, ...]
    dataset: str = "digits"
    num_samples: int = 8
    epochs: int = 10
    max_concurrent: int = 0          # 0: as many as the cluster's CPUs allow
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    tracking_uri: str = ""
    storage: str = ""
    seed: int = 0
    search_space: str = ""           # a file overriding the method's default space (single method only)
    grace_period: int = 1            # ASHA: epochs every trial gets before it may be stopped
    reduction_factor: int = 2
    experiment: str = ""             # MLflow experiment; default search/<dataset>
    checkpoint_seconds: float = CHECKPOINT_SECONDS  # a trial checkpoints at most this often (0: every epoch)


@dataclass(frozen=True)
class Study:
    method: str
    space: SearchSpace
    base: dict[str, Any]             # flat keys set by the command line
    name: str


class SearchInterrupted(RuntimeError):
    """The driver was interrupted (Ctrl-C): unfinished runs were marked KILLED; rerun the command to resume."""


def experiment_name(s: SearchSettings) -> str:
    return s.experiment or f"search/{s.dataset}"


def study_name(method: str, space: SearchSpace, base: dict[str, Any], s: SearchSettings) -> str:
    # The MLflow store and experiment are part of the identity: the same search logged elsewhere is another study.
    ident = {"space": space.fingerprint(), "base": base, "num_samples": s.num_samples, "seed": s.seed,
             "asha": [s.grace_period, s.reduction_factor], "metric": METRIC,
             "tracking_uri": s.tracking_uri or tracking.default_tracking_uri(), "experiment": experiment_name(s)}
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{method}-{base['data.dataset']}-{digest}"


def plan(s: SearchSettings) -> list[Study]:
    """Validate everything the search needs, before Ray starts: methods, spaces, dataset (loaded once),
    storage and the MLflow store."""
    studies = []
    for method in s.methods:
        space = load_search_space(method, s.search_space or None)
        base = {"method": method, "data.dataset": s.dataset, "train.epochs": s.epochs, "train.seed": s.seed}
        # Every value the command line sets must make a valid config together with the space's fixed values.
        RunConfig.from_flat({**space.fixed, **base})
        studies.append(Study(method, space, base, study_name(method, space, base, s)))
    # Loads (downloading on first use) and verifies the data: a missing or corrupt file fails here.
    load_dataset(RunConfig.from_flat({**studies[0].space.fixed, **studies[0].base}).data, "cpu")
    check_storage(_storage(s))
    tracking.check_store(s.tracking_uri or tracking.default_tracking_uri())  # last: opening SQLite creates the file
    return studies


def check_storage(storage: str) -> None:
    if "://" in storage:
        return  # remote storage (s3://, gs://, ...) is checked by Tune itself
    path = Path(storage)
    existing = next(p for p in (path, *path.parents) if p.exists())  # checked without creating anything
    if not existing.is_dir():
        raise tracking.StoreError(f"--storage {storage}: {existing} is not a folder")
    try:  # os.access lies for root on read-only file systems: try a transient folder instead
        os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".sparsebench-check-"))
    except OSError as e:
        raise tracking.StoreError(f"--storage {storage}: cannot create it ({existing}: {e.strerror})") from None


def quiet() -> None:
    """Our own one line per trial replaces the libraries' progress output."""
    import logging

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
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
    else:
        ray.init(_node_ip_address="127.0.0.1", dashboard_host="127.0.0.1", include_dashboard=False,
                 num_cpus=num_cpus, log_to_driver=False, configure_logging=True, logging_level="warning")


class ResourceError(ValueError):
    pass


def check_resources(s: SearchSettings) -> None:
    """A trial asking for more than any node has would wait forever: refuse it instead."""
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    most_cpu = max((n.get("CPU", 0) for n in nodes), default=0)
    most_gpu = max((n.get("GPU", 0) for n in nodes), default=0)
    if s.cpus_per_trial > most_cpu:
        raise ResourceError(f"--cpus-per-trial {s.cpus_per_trial:g}: the largest Ray node has {most_cpu:g} CPUs")
    if s.gpus_per_trial > most_gpu:
        raise ResourceError(f"--gpus-per-trial {s.gpus_per_trial:g}: the largest Ray node has {most_gpu:g} GPUs")


def _storage(s: SearchSettings) -> str:
    if s.storage and "://" in s.storage:
        return s.storage
    return str(Path(s.storage or "ray_results").resolve())


def run_study(study: Study, s: SearchSettings, echo: bool = True) -> dict[str, Any]:
    """One method's search. Returns {study, parent_run_id, experiment, trials, errors}."""
    uri = s.tracking_uri or tracking.default_tracking_uri()
    c = tracking.client(uri)
    experiment = experiment_name(s)
    exp_id = tracking.get_or_create_experiment(c, experiment)
    parent = tracking.start_parent_run(
        c, exp_id, study.name, run_name=f"{study.method}-search",
        tags={"method": study.method, "dataset": s.dataset, "stage": "search"},
        params={"num_samples": s.num_samples, "epochs": s.epochs, "seed": s.seed, "search_space": study.space.source,
                "space": json.dumps(study.space.fingerprint(), sort_keys=True), "scheduler": "asha",
                "asha.grace_period": s.grace_period, "asha.reduction_factor": s.reduction_factor,
                "cpus_per_trial": s.cpus_per_trial, "gpus_per_trial": s.gpus_per_trial})
    try:
        grid = _fit(study, s, uri, experiment, echo)
    except BaseException:
        tracking.close_open_children(c, exp_id, parent, "FAILED")
        c.set_terminated(parent, status="FAILED")
        raise
    # Tune returns normally after Ctrl-C: trials still open then did not finish.
    killed, statuses = tracking.close_open_children(c, exp_id, parent, "KILLED")
    done = statuses["FINISHED"] + statuses["FAILED"]
    tracking.set_tags(c, parent, {"trials": str(done), "trial_errors": str(grid.num_errors)})
    _log_study_table(c, uri, experiment, parent)
    if killed or done < s.num_samples:
        c.set_terminated(parent, status="KILLED")
        raise SearchInterrupted(f"study {study.name} interrupted after {done} of {s.num_samples} trials; "
                                f"run the same command again to resume it")
    c.set_terminated(parent, status="FAILED" if grid.num_errors else "FINISHED")
    return {"study": study.name, "parent_run_id": parent, "experiment": experiment, "trials": done, "errors": grid.num_errors,
            "best_config": best_config(grid, study)}


def best_config(grid, study: Study) -> dict[str, Any] | None:
    """The flat config of the finished trial with the best last val_acc (as `best_table` chooses), without its seed."""
    ok = [r for r in grid if r.error is None and r.metrics and METRIC in r.metrics]
    if not ok:
        return None
    # The order best_table uses: val_acc, then fewer trainable parameters, then the earlier trial.
    best = min(ok, key=lambda r: (-r.metrics[METRIC], r.metrics.get("params_trainable", 0), r.metrics.get("trial_id", "")))
    flat = RunConfig.from_flat(study.space.decode(best.config)).without_seed().flat()
    return {k: v for k, v in flat.items() if k != "train.seed"}


def _fit(study: Study, s: SearchSettings, uri: str, experiment: str, echo: bool):
    decode = study.space.decode
    fn = tune.with_resources(tune.with_parameters(trainable, decode=decode, checkpoint_seconds=s.checkpoint_seconds),
                             {"cpu": s.cpus_per_trial, "gpu": s.gpus_per_trial})
    path = f"{_storage(s).rstrip('/')}/{study.name}"
    if tune.Tuner.can_restore(path):
        # A rerun of the same command (e.g. after the driver was killed): finished trials are kept.
        if echo:
            print(f"  restoring study {study.name} from {path}", flush=True)
        return tune.Tuner.restore(path, trainable=fn, resume_unfinished=True, resume_errored=True).fit()
    callback = MlflowTrialCallback(uri, experiment, study.name, stage="search", decode=decode, tags={"study": study.name},
                                   max_epochs=s.epochs, echo=echo)
    searcher = OptunaSearch(space=study.space.define_by_run(study.base), metric=METRIC, mode=MODE,
                            sampler=_sampler(s.seed), study_name=study.name)
    scheduler = ASHAScheduler(time_attr="epoch", metric=METRIC, mode=MODE, max_t=s.epochs,
                              grace_period=min(s.grace_period, s.epochs), reduction_factor=s.reduction_factor)
    tuner = tune.Tuner(
        fn,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=s.num_samples,
                                    max_concurrent_trials=s.max_concurrent or None, reuse_actors=True,
                                    trial_dirname_creator=lambda t: f"{t.trial_id}_{run_config_from(decode(t.config)).hash()}"),
        run_config=tune.RunConfig(name=study.name, storage_path=_storage(s), callbacks=[callback, *result_loggers()], verbose=0,
                                  checkpoint_config=CHECKPOINTS,
                                  failure_config=tune.FailureConfig(max_failures=2)),
    )
    return tuner.fit()


def _log_study_table(c, uri: str, experiment: str, parent: str) -> None:
    """The study's table (its trials only) as artifacts of its parent run, so the MLflow UI shows it."""
    from .tables import best_table, render, runs_frame

    table = best_table(runs_frame(uri, experiment, parent_run_ids=[parent]))
    for fmt, name in (("markdown", "table.md"), ("csv", "table.csv"), ("html", "table.html")):
        c.log_text(parent, render(table, fmt), name)


def _sampler(seed: int):
    import optuna

    return optuna.samplers.TPESampler(seed=seed)


def search(s: SearchSettings, studies: list[Study] | None = None, echo: bool = True) -> list[dict[str, Any]]:
    """Run every method's study, one after another; `studies` from `plan(s)` when already validated."""
    studies = studies or plan(s)
    init_ray()
    check_resources(s)
    out = []
    for study in studies:
        if echo:
            print(f"[{study.method}] study {study.name}: {s.num_samples} trials x {s.epochs} epochs on {s.dataset}", flush=True)
        out.append(run_study(study, s, echo=echo))
    return out
