"""`MlflowTrialCallback` runs in the driver, the only writer to MLflow (the trials' trainable is
workflows/trainable.py): it opens one MLflow child run per trial (or finds the one a resumed trial already has, by
tag), logs each epoch once (epochs already logged are skipped after a retry, epochs a killed driver never wrote are
filled in from the resumed trial's history) and closes the run with the trial's final status.

Epochs are written by a background thread (`_Writer`), so Tune's event loop, and with it every trial waiting for
its report to be taken, never waits on the tracking server; the epochs of a run queued within a second of each
other (more under load) go to the store in one request. Runs are created and closed synchronously: a trial's run
is complete before Tune records the trial as finished.
"""
from __future__ import annotations

import atexit
import json
import queue
import threading
from pathlib import Path
from typing import Any, Callable

from ray import tune

from . import tracking
from .trainable import EXAMPLE_FILE, HISTORY_KEY, MODEL_FILE, run_config_from

# The writer waits this long after the first queued write before it drains the queue, so that a run's epochs go
# to the store together: on a SQLite store one log_batch of 5 epochs costs 8 ms of driver CPU per epoch, one per
# epoch 19 ms (measured in this session, 30 metrics per epoch). A flush (a trial ending, the study ending) cuts
# the wait short. The MLflow UI lags the trials by about this much.
LINGER_SECONDS = 1.0


class _Writer:
    """One thread performing MLflow writes in the order they were queued. It drains the queue LINGER_SECONDS
    after the first write arrived (at once when a flush waits) and sends the pending metrics of a run as one
    log_batch (at most 900 metrics each); any other operation on a run (tags, a pruning curve) first sends that
    run's pending metrics. The MLflow client retries a failed request itself
    (MLFLOW_HTTP_REQUEST_MAX_RETRIES, 7 by default with exponential back-off); what still fails is raised in the
    driver at its next write or flush, so nothing is lost silently."""

    def __init__(self, client):
        self.client = client
        self.q: queue.Queue = queue.Queue()
        self.error: BaseException | None = None
        self._urgent = threading.Event()   # set while a flush waits: no lingering
        self._flushes, self._lock = 0, threading.Lock()
        self.thread = threading.Thread(target=self._loop, name="sparsebench-mlflow-writer", daemon=True)
        self.thread.start()
        atexit.register(self.flush, raise_error=False)

    def metrics(self, run_id: str, values: dict[str, float], step: int) -> None:
        self._put(("metrics", run_id, tracking.epoch_metrics(values, step)))

    def call(self, run_id: str, fn: Callable[[], Any]) -> None:
        self._put(("call", run_id, fn))

    def flush(self, raise_error: bool = True) -> None:
        with self._lock:
            self._flushes += 1
            self._urgent.set()
        try:
            self.q.join()
        finally:
            with self._lock:
                self._flushes -= 1
                if not self._flushes:
                    self._urgent.clear()
        if raise_error:
            self._raise()

    def _put(self, item) -> None:
        self._raise()
        self.q.put(item)

    def _raise(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"writing to the MLflow tracking store failed: {self.error}") from self.error

    def _loop(self) -> None:
        while True:
            items = [self.q.get()]
            self._urgent.wait(LINGER_SECONDS)
            while True:
                try:
                    items.append(self.q.get_nowait())
                except queue.Empty:
                    break
            try:
                if self.error is None:
                    self._write(items)
            except BaseException as e:  # noqa: BLE001 - kept and raised in the driver's thread
                self.error = e
            finally:
                for _ in items:
                    self.q.task_done()

    def _write(self, items) -> None:
        pending: dict[str, list] = {}

        def send(run_id: str) -> None:
            tracking.log_metric_list(self.client, run_id, pending.pop(run_id, []))

        for op, run_id, payload in items:
            if op == "metrics":
                pending.setdefault(run_id, []).extend(payload)
                continue
            send(run_id)
            payload()
        for run_id in list(pending):
            send(run_id)


def error_line(trial) -> str:
    """The last line of a failed trial's error (Tune keeps its traceback in the trial's storage): the exception and
    its message, e.g. the one line of a DatasetError raised on the worker."""
    try:
        err = trial.get_error()
    except Exception:  # noqa: BLE001 - the error file is gone or unreadable: the run is FAILED without the line
        return ""
    lines = [line.strip() for line in str(err or "").splitlines() if line.strip()]
    return lines[-1][:1000] if lines else ""


class MlflowTrialCallback(tune.Callback):
    """Driver-side MLflow writer for the trials of one study (one Tuner).

    It holds names, not ids: the experiment and the parent run are looked up by name and tag on first use, and
    the environment snapshot is taken then, so a callback unpickled by `Tuner.restore` in a later driver
    writes where, and with what, that driver runs.
    """

    def __init__(self, tracking_uri: str, experiment: str, study: str, stage: str, decode, tags: dict[str, str],
                 max_epochs: int, echo: bool = True, trial_tags=None, log_models: bool = False):
        """`trial_tags(config)`: tags of one trial's run beside `tags` (a reproduction's cell identity);
        `log_models`: a finished trial's network (in its final checkpoint, runner.fit(keep_model=True)) is logged
        as the run's MLflow model before the run closes."""
        self.uri, self.experiment, self.study = tracking_uri, experiment, study
        self.stage, self.decode, self.tags, self.echo = stage, decode, tags, echo
        self.trial_tags, self.log_models = trial_tags, log_models
        self.max_epochs = max_epochs
        self._reset()

    def _reset(self):
        self._client = None
        self._ids: tuple[str, str] | None = None  # (experiment id, parent run id)
        self._env: dict[str, str] | None = None
        self._runs: dict[str, str] = {}       # trial_id -> run_id
        self._logged: dict[str, int] = {}     # run_id -> last epoch logged
        self._placed: dict[str, dict] = {}    # run_id -> the placement tags last written (node, host, device)
        self._writer: _Writer | None = None

    def __getstate__(self):
        state = dict(self.__dict__)
        for k in ("_client", "_ids", "_env", "_runs", "_logged", "_placed", "_writer"):
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
    def writer(self) -> _Writer:
        if self._writer is None:
            self._writer = _Writer(self.client)
        return self._writer

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
        logged = self._logged.get(run_id, 0)
        if epoch <= logged:
            return  # already logged before a retry: never log an epoch twice
        w = self.writer
        # Epochs trained before a checkpoint that a killed driver had queued but not written (trainable.py).
        for m in json.loads(result.get(HISTORY_KEY) or "[]"):
            if logged < int(m["epoch"]) < epoch:
                w.metrics(run_id, tracking.numeric_metrics(m), step=int(m["epoch"]))
        placed = {k: str(v) for k, v in result.items() if k in ("dataset_checksum", "device") or k.startswith("trial.")}
        if placed != self._placed.get(run_id):  # the first result, or the first after a retry elsewhere
            w.call(run_id, lambda: tracking.set_tags(self.client, run_id, placed))
            self._placed[run_id] = placed
            described = result.get("dataset_input")
            if described:  # the UI's Dataset column; MLflow keeps one input per (run, dataset digest, context)
                w.call(run_id, lambda: tracking.log_dataset_input(self.client, run_id, described))
        if isinstance(result.get("pruning"), dict):  # the last epoch of a run with train.prune_curve
            # Before the epoch's metrics: `epoch` is what a restarted driver reads to skip logged results, so it
            # must be written last (log_pruning_curve is idempotent should this run twice).
            cfg = self.decode(trial.config) if self.decode else trial.config
            title = f"{cfg.get('method')} {trial.trial_id}: score {cfg.get('train.prune_score', 'auto')}"
            curve = result["pruning"]
            w.call(run_id, lambda: tracking.log_pruning_curve(self.client, run_id, curve, title))
        w.metrics(run_id, tracking.numeric_metrics(result), step=epoch)
        self._logged[run_id] = epoch

    def _finish(self, trial, status: str):
        run_id = self._run_for(trial)
        # Every epoch written before the run closes and before Tune records the trial as done, so that a driver
        # killed afterwards has nothing of a finished trial left to fill in.
        self.writer.flush()
        last = trial.last_result or {}
        diverged = status == "FINISHED" and bool(last.get("diverged"))
        stopped = status == "FINISHED" and not diverged and int(last.get("epoch", 0)) < self.max_epochs
        if stopped:  # ASHA stopped it: a finished run, but not a fully trained one
            tracking.set_tags(self.client, run_id, {"early_stopped": "true"})
        if diverged:  # its loss went NaN/inf and training ended there; an outcome, logged and kept out of best_table
            tracking.set_tags(self.client, run_id, {"diverged": "true"})
        if self.log_models and status == "FINISHED" and not diverged:
            # Before the run is FINISHED: a finished final run always has its model (a reproduction reruns the
            # cells whose runs are not FINISHED, workflows/reproduce.py).
            self._log_model(trial, run_id)
        error = error_line(trial) if status == "FAILED" else ""
        if error:   # e.g. a worker without the data file (trainable.trial_trainer): the UI shows why
            tracking.set_tags(self.client, run_id, {"error": error})
        self.client.set_terminated(run_id, status=status)
        if self.echo:
            word = "diverged" if diverged else "stopped" if stopped else status.lower()
            print(f"  trial {trial.trial_id} {word:8s} epoch {last.get('epoch', 0):>3} "
                  f"val_acc {last.get('val_acc', float('nan')):.4f} test_acc {last.get('test_acc', float('nan')):.4f}"
                  + (f": {error}" if error else ""), flush=True)

    def _log_model(self, trial, run_id: str) -> None:
        """The network the trial saved in its final checkpoint (trainable.save_model), read where the driver is
        (the checkpoint lies in Tune's storage, local or remote), logged as the run's MLflow model."""
        import torch

        checkpoint = trial.checkpoint
        if checkpoint is None:
            raise RuntimeError(f"trial {trial.trial_id} finished without a checkpoint: no model to log")
        with checkpoint.as_directory() as d:
            folder = Path(d)
            if not (folder / MODEL_FILE).is_file():
                raise RuntimeError(f"trial {trial.trial_id}: its final checkpoint {checkpoint.path} holds no {MODEL_FILE}")
            # map_location: a network trained on a GPU is logged from a driver that may have none.
            # weights_only=False: a whole module, pickled by our own trainable.
            model = torch.load(folder / MODEL_FILE, map_location="cpu", weights_only=False)
            example = torch.load(folder / EXAMPLE_FILE, map_location="cpu", weights_only=True)
        config = run_config_from(self.decode(trial.config)).flat()
        tracking.log_model(self.uri, run_id, model, example, json.loads(json.dumps(config)))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finish(trial, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finish(trial, "FAILED")

    def on_experiment_end(self, trials, **info):
        if self._writer is not None:
            self._writer.flush()
