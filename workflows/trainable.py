"""The Tune trainable shared by `search` and `reproduce`: config -> methods.Trainer -> a `tune.report` every epoch,
with a checkpoint when `checkpoint_seconds` have passed since the last one and after the final epoch. A retried or
restored trial resumes from its last checkpoint and trains the epochs after it again; training is deterministic
(Trainer.state_dict holds every RNG), so it reports the same metrics, and the driver logs each epoch once.

This module is what every trial worker imports, so it imports no MLflow: trials never write to the tracking
store (docs/design.md, "MLflow layout"); their results reach the driver through Tune.
"""
from __future__ import annotations

import json
import socket
import tempfile
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from sparsebench.methods import DatasetError, RunConfig, Trainer, list_datasets

from . import failpoints, ray_job
from .system_metrics import Sampler
from .checkpointing import CHECKPOINT_SECONDS, CheckpointCadence
from .hardware import hardware

STATE_FILE = "trainer_state.pt"
HISTORY_KEY = "restored_history"   # the epochs a resumed trial had trained, sent with its first report
# With `keep_model`, the final checkpoint also holds the trained network as a pickled module and the first test
# inputs (the driver logs them as an MLflow model: MlflowTrialCallback(log_models=True), tracking.log_model).
MODEL_FILE, EXAMPLE_FILE, EXAMPLE_ROWS = "model.pt", "input_example.pt", 5


def run_config_from(config: dict[str, Any]) -> RunConfig:
    """A Tune trial config (flat keys; search params already decoded) -> RunConfig."""
    return RunConfig.from_flat(config)


def dataset_description(cfg: RunConfig, info) -> str:
    """What the driver logs as the run's MLflow dataset input (tracking.dataset_input), as JSON text: a trial never
    writes to MLflow itself, and the driver does not load the data."""
    path = "" if cfg.data.dataset in list_datasets() else cfg.data.dataset
    return json.dumps({"name": info.name, "checksum": info.checksum, "source": info.source, "path": path,
                       "test_path": cfg.data.test_dataset, "input_shape": list(info.input_shape),
                       "num_classes": info.num_classes, "n_train": info.n_train, "n_val": info.n_val, "n_test": info.n_test})


def trial_trainer(cfg: RunConfig) -> Trainer:
    """The trial's Trainer, its data read on the node the trial runs on. The driver checked the data on its own node
    only: a file missing or unreadable here fails the trial with one line naming the file and this node (after
    Tune's retries the trial's run is FAILED with that line as its `error` tag)."""
    data = cfg.data
    if data.dataset not in list_datasets():   # a file shipped in the job's working dir: this node's copy
        cfg = cfg.replace(**{"data.dataset": ray_job.node_path(data.dataset),
                             "data.test_dataset": ray_job.node_path(data.test_dataset)})
    try:
        return Trainer(cfg, device="auto")
    except DatasetError as e:
        where = f"on node {ray.util.get_node_ip_address()} (host {socket.gethostname()})"
        hint = "" if cfg.data.dataset in list_datasets() else (
            "; a data file must lie at this path on every node: ship it inside the job's --working-dir or put it on "
            "a filesystem every node mounts (docs/cluster.md, 'Your data on the cluster')")
        raise DatasetError(f"{e} {where}{hint}") from None


def save_model(tr: Trainer, folder: Path) -> None:
    """The network as trained and last measured (no topology change follows the last epoch: Trainer.run_epoch) and
    the first test inputs as the network sees them, for the driver to log (tracking.log_model)."""
    torch.save(tr.model, folder / MODEL_FILE)
    torch.save(tr.data.x_test[:EXAMPLE_ROWS].clone(), folder / EXAMPLE_FILE)


def trainable(config: dict[str, Any], decode=None, checkpoint_seconds: float = CHECKPOINT_SECONDS,
              keep_model: bool = False) -> None:
    """Ray Tune function trainable. `decode` maps sampled values back to config values (list choices);
    `keep_model`: the final checkpoint holds the trained network (`save_model`), unless the run diverged."""
    cfg = run_config_from(decode(config) if decode else config)
    # Ray sets OMP_NUM_THREADS only for whole CPUs; with a fraction of one (many small trials per core) torch
    # would start a thread per core in every trial and oversubscribe the node.
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    if cpus is not None and cpus < 1:
        torch.set_num_threads(1)
    trainer = trial_trainer(cfg)
    checkpoint = tune.get_checkpoint()
    restored: list[str] = []   # the history as JSON, until the first report has sent it
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            trainer.load(Path(d) / STATE_FILE)
        # The driver may not have logged every epoch before this checkpoint (its MLflow writes are queued, and a
        # killed driver loses its queue): the first report carries them, and the driver fills its gaps.
        # As JSON text: Tune's loggers skip a string quietly (its TensorBoard logger warns about a list of dicts).
        restored = [json.dumps([{k: v for k, v in m.items() if k != "pruning"} for m in trainer.history])]
    # Where this attempt runs: after a retry on another node the run's tags follow it (MlflowTrialCallback).
    info = {"config_hash": cfg.hash(), "dataset_checksum": trainer.data.info.checksum, "device": str(trainer.device),
            "dataset_input": dataset_description(cfg, trainer.data.info),
            "trial.node_id": ray.get_runtime_context().get_node_id(),
            **({"trial.data_file": trainer.cfg.data.dataset} if cfg.data.dataset not in list_datasets() else {}),
            **{f"trial.{k}": v for k, v in hardware().items()}}

    cadence = CheckpointCadence(checkpoint_seconds)

    trial_id = tune.get_context().get_trial_id()

    sampler = Sampler()   # what the trial uses of its node, as MLflow's system metrics (workflows/system_metrics.py)
    first = [True]   # until this attempt's first report (which samples at once) has gone

    def report(metrics: dict[str, float], tr: Trainer) -> None:
        result = {**metrics, **info, **sampler.take(now=bool(first and first.pop()) or tr.finished),
                  **({HISTORY_KEY: restored.pop()} if restored else {})}
        hold = failpoints.due(trial_id, metrics["epoch"])   # a fault test's hold point (workflows/failpoints.py)
        if not (cadence.due(final=tr.finished) or hold):
            tune.report(result)
            return
        with tempfile.TemporaryDirectory() as d:
            tr.save(Path(d) / STATE_FILE)
            if keep_model and tr.finished and not tr.diverged:
                save_model(tr, Path(d))
            tune.report(result, checkpoint=tune.Checkpoint.from_directory(d))
        if hold:
            failpoints.wait(trial_id, metrics["epoch"])

    try:
        if checkpoint is not None and trainer.finished:
            # Restored from its final checkpoint: the driver died after the trial's last epoch but before Tune
            # recorded the trial finished. Nothing is trained; the last epoch is reported again (the driver skips
            # it) so that its history reaches the driver, which fills in epochs (or the pruning curve) it had not
            # yet written.
            tune.report({**trainer.history[-1], **info, HISTORY_KEY: restored.pop()})
            return
        trainer.fit(report)
    finally:
        sampler.close()
