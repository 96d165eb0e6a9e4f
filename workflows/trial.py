"""The Tune trainable shared by `search` (and later `reproduce`): config -> methods.Trainer -> per-epoch
`tune.report` with a checkpoint. A retried or restored trial resumes from its last checkpoint, so its
metrics continue exactly where they stopped (Trainer.state_dict holds every RNG).

`MlflowTrialCallback` runs in the driver: it opens one MLflow child run per trial (or finds the one a
resumed trial already has, by tag), logs each epoch once (epochs already logged are skipped after a retry)
and closes the run with the trial's final status.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from ray import tune

from methods import RunConfig, Trainer

from . import tracking

STATE_FILE = "trainer_state.pt"


def run_config_from(config: dict[str, Any]) -> RunConfig:
    """A Tune trial config (flat keys; search params already decoded) -> RunConfig."""
    return RunConfig.from_flat(config)


def trainable(config: dict[str, Any], decode=None) -> None:
    """Ray Tune function trainable. `decode` maps sampled values back to config values (list choices)."""
    cfg = run_config_from(decode(config) if decode else config)
    trainer = Trainer(cfg, device="auto")
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            trainer.load(Path(d) / STATE_FILE)
    info = {"config_hash": cfg.hash(), "dataset_checksum": trainer.data.info.checksum, "device": str(trainer.device),
            **{f"trial.{k}": v for k, v in tracking.hardware().items()}}

    def report(metrics: dict[str, float], tr: Trainer) -> None:
        with tempfile.TemporaryDirectory() as d:
            tr.save(Path(d) / STATE_FILE)
            tune.report({**metrics, **info}, checkpoint=tune.Checkpoint.from_directory(d))

    trainer.fit(report)


class MlflowTrialCallback(tune.Callback):
    """Driver-side MLflow writer for the trials of one study (one Tuner).

    It holds names, not ids: the experiment and the parent run are looked up by name and tag on first use, and
    the environment snapshot is taken then, so a callback unpickled by `Tuner.restore` in a later driver
    writes where, and with what, that driver runs.
    """

    def __init__(self, tracking_uri: str, experiment: str, study: str, stage: str, decode, tags: dict[str, str],
                 max_epochs: int, echo: bool = True, trial_tags=None):
        """`trial_tags(config)`: tags of one trial's run beside `tags` (a reproduction's cell identity)."""
        self.uri, self.experiment, self.study = tracking_uri, experiment, study
        self.stage, self.decode, self.tags, self.echo = stage, decode, tags, echo
        self.trial_tags = trial_tags
        self.max_epochs = max_epochs
        self._reset()

    def _reset(self):
        self._client = None
        self._ids: tuple[str, str] | None = None  # (experiment id, parent run id)
        self._env: dict[str, str] | None = None
        self._runs: dict[str, str] = {}       # trial_id -> run_id
        self._logged: dict[str, int] = {}     # run_id -> last epoch logged

    def __getstate__(self):
        state = dict(self.__dict__)
        for k in ("_client", "_ids", "_env", "_runs", "_logged"):
            state.pop(k)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._reset()

    @property
    def client(self):
        if self._client is None:
            self._client = tracking.client(self.uri)
        return self._client

    @property
    def experiment_id(self) -> str:
        return self._resolve()[0]

    @property
    def parent_run_id(self) -> str:
        return self._resolve()[1]

    def _resolve(self) -> tuple[str, str]:
        if self._ids is None:
            # The driver created both before the study started; the callback never creates an experiment.
            exp = self.client.get_experiment_by_name(self.experiment)
            if exp is None:
                raise RuntimeError(f"no experiment {self.experiment!r}: the driver creates it before the study")
            exp_id = exp.experiment_id
            parent = tracking.find_run(self.client, exp_id, {tracking.TAG_STUDY: self.study, tracking.TAG_KIND: "parent"})
            if parent is None:
                raise RuntimeError(f"no parent run for study {self.study} in experiment {self.experiment}: the driver creates it first")
            self._ids = (exp_id, parent.info.run_id)
        return self._ids

    @property
    def env(self) -> dict[str, str]:
        if self._env is None:
            self._env = tracking.env_tags()  # git/version/command of this driver, on every child run too
        return self._env

    def _run_for(self, trial) -> str:
        if trial.trial_id in self._runs:
            return self._runs[trial.trial_id]
        c = self.client
        found = tracking.find_run(c, self.experiment_id, {tracking.TAG_TRIAL: trial.trial_id, tracking.PARENT_TAG: self.parent_run_id})
        if found is not None:  # a restored or retried trial continues its own run
            run_id = found.info.run_id
            c.update_run(run_id, status="RUNNING")
            self._logged[run_id] = tracking.last_logged_epoch(c, run_id)
        else:
            cfg = run_config_from(self.decode(trial.config))
            run = c.create_run(self.experiment_id, run_name=f"{cfg.method}-{trial.trial_id}", tags={
                tracking.PARENT_TAG: self.parent_run_id, tracking.TAG_TRIAL: trial.trial_id, tracking.TAG_KIND: "trial",
                "stage": self.stage, "method": cfg.method, "dataset": cfg.data.dataset, "config_hash": cfg.hash(),
                **self.env, **self.tags, **(self.trial_tags(trial.config) if self.trial_tags else {})})
            run_id = run.info.run_id
            tracking.log_params(c, run_id, cfg.flat())
            self._logged[run_id] = 0
        self._runs[trial.trial_id] = run_id
        return run_id

    def on_trial_start(self, iteration, trials, trial, **info):
        self._run_for(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        run_id = self._run_for(trial)
        epoch = int(result.get("epoch", 0))
        if epoch <= self._logged.get(run_id, 0):
            return  # already logged before a retry: never log an epoch twice
        if self._logged.get(run_id, 0) == 0:
            tracking.set_tags(self.client, run_id, {k: v for k, v in result.items()
                                                    if k in ("dataset_checksum", "device") or k.startswith("trial.")})
        if isinstance(result.get("pruning"), dict):  # the last epoch of a run with train.prune_curve
            # Before the epoch's metrics: `epoch` is what a restarted driver reads to skip logged results, so it
            # must be written last (log_pruning_curve is idempotent should this run twice).
            cfg = self.decode(trial.config) if self.decode else trial.config
            tracking.log_pruning_curve(self.client, run_id, result["pruning"],
                                       f"{cfg.get('method')} {trial.trial_id}: score {cfg.get('train.prune_score', 'auto')}")
        tracking.log_epoch(self.client, run_id, tracking.numeric_metrics(result), step=epoch)
        self._logged[run_id] = epoch

    def _finish(self, trial, status: str):
        run_id = self._run_for(trial)
        last = trial.last_result or {}
        diverged = status == "FINISHED" and bool(last.get("diverged"))
        stopped = status == "FINISHED" and not diverged and int(last.get("epoch", 0)) < self.max_epochs
        if stopped:  # ASHA stopped it: a finished run, but not a fully trained one
            tracking.set_tags(self.client, run_id, {"early_stopped": "true"})
        if diverged:  # its loss went NaN/inf and training ended there; an outcome, logged and kept out of best_table
            tracking.set_tags(self.client, run_id, {"diverged": "true"})
        self.client.set_terminated(run_id, status=status)
        if self.echo:
            word = "diverged" if diverged else "stopped" if stopped else status.lower()
            print(f"  trial {trial.trial_id} {word:8s} epoch {last.get('epoch', 0):>3} "
                  f"val_acc {last.get('val_acc', float('nan')):.4f} test_acc {last.get('test_acc', float('nan')):.4f}", flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finish(trial, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finish(trial, "FAILED")
