"""The driver-side MLflow callback and the tables, without Ray: fake trials, a real SQLite MLflow store."""
from __future__ import annotations

import json
import pickle
import threading
import time
from types import SimpleNamespace

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from sparsebench.workflows import tracking
from sparsebench.workflows.tables import best_table, runs_frame
from sparsebench.workflows.trial import MlflowTrialCallback

CONFIG = {"method": "dense", "data.dataset": "digits", "train.epochs": 4, "train.lr": 0.05}


def result(epoch: int) -> dict:
    return {"epoch": epoch, "val_acc": 0.1 * epoch, "test_acc": 0.1 * epoch, "train_loss": 1.0 / epoch,
            "params_trainable": 100, "weights_nonzero": 90, "trial.host": "h", "dataset_checksum": "abc",
            "time_total_s": 3.0}  # a Tune bookkeeping key, not logged


@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    c = tracking.client(uri)
    exp_id = tracking.get_or_create_experiment(c, "search/digits")
    parent = tracking.start_parent_run(c, exp_id, "study-x", "dense-search", tags={}, params={"a": 1})
    return SimpleNamespace(uri=uri, client=c, exp_id=exp_id, parent=parent)


def identity(config: dict) -> dict:
    return config


def make_callback(store) -> MlflowTrialCallback:
    return MlflowTrialCallback(store.uri, "search/digits", "study-x", stage="search", decode=identity, tags={},
                               max_epochs=4, echo=False)


def history(client: MlflowClient, run_id: str, key: str = "epoch") -> list[int]:
    return [m.step for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


def test_retried_and_restored_trials_continue_their_run_without_duplicates(store):
    trial = SimpleNamespace(trial_id="t1", config=CONFIG, last_result={})
    cb = make_callback(store)
    cb.on_trial_start(0, [], trial)
    for e in (1, 2, 3):
        cb.on_trial_result(0, [], trial, result(e))
    # The trial's worker died and Tune retries it from the epoch-2 checkpoint: epochs 3 and 4 arrive again.
    for e in (3, 4):
        cb.on_trial_result(0, [], trial, result(e))
    cb.on_experiment_end([])   # the epochs are written by the writer thread: wait for it
    runs = store.client.search_runs([store.exp_id], f"tags.`{tracking.TAG_KIND}` = 'trial'")
    assert len(runs) == 1
    run_id = runs[0].info.run_id
    assert history(store.client, run_id) == [1, 2, 3, 4]
    assert runs[0].data.tags[tracking.PARENT_TAG] == store.parent and runs[0].data.tags["config_hash"]
    assert "time_total_s" not in runs[0].data.metrics

    # The driver is killed; a new driver unpickles the callback (Tuner.restore) and the trial resumes.
    revived = pickle.loads(pickle.dumps(cb))
    assert revived._runs == {}
    revived.on_trial_start(0, [], trial)
    revived.on_trial_result(0, [], trial, result(4))
    trial.last_result = result(4)
    revived.on_trial_complete(0, [], trial)
    assert history(store.client, run_id) == [1, 2, 3, 4]
    assert store.client.get_run(run_id).info.status == "FINISHED"
    assert len(store.client.search_runs([store.exp_id], f"tags.`{tracking.TAG_KIND}` = 'trial'")) == 1


def test_early_stopped_failed_diverged_and_interrupted_runs(store):
    cb = make_callback(store)
    stopped = SimpleNamespace(trial_id="s", config=CONFIG, last_result=result(1))
    failed = SimpleNamespace(trial_id="f", config=CONFIG, last_result=result(2))
    running = SimpleNamespace(trial_id="r", config=CONFIG, last_result=result(1))
    # Diverged in epoch 2 (the Trainer ends the run there): the best val_acc of all, yet never the best trial.
    diverged = SimpleNamespace(trial_id="d", config=CONFIG, last_result={**result(2), "val_acc": 0.9, "diverged": True})
    for t in (stopped, failed, running, diverged):
        cb.on_trial_start(0, [], t)
        cb.on_trial_result(0, [], t, t.last_result)
    cb.on_trial_complete(0, [], stopped)   # flushes every queued write first
    cb.on_trial_error(0, [], failed)
    cb.on_trial_complete(0, [], diverged)
    closed, statuses = tracking.close_open_children(store.client, store.exp_id, store.parent, "KILLED")
    assert closed == 1 and statuses == {"FINISHED": 2, "FAILED": 1, "KILLED": 1}
    status = {r.data.tags[tracking.TAG_TRIAL]: (r.info.status, r.data.tags.get("early_stopped"), r.data.tags.get("diverged"))
              for r in store.client.search_runs([store.exp_id], f"tags.`{tracking.TAG_KIND}` = 'trial'")}
    assert status == {"s": ("FINISHED", "true", None), "f": ("FAILED", None, None), "r": ("KILLED", None, None),
                      "d": ("FINISHED", None, "true")}
    frame = runs_frame(store.uri, "search/digits", parent_run_ids=[store.parent])
    assert len(frame) == 4 and frame["diverged"].sum() == 1
    table = best_table(frame)
    assert table["trials"].tolist() == [4]  # all trials counted, only the finished, not diverged one chosen
    assert table["val_acc"].tolist() == [pytest.approx(0.1)]


def test_best_table_chooses_by_validation_not_test():
    runs = pd.DataFrame({
        "experiment": "e", "method": "dense", "dataset": "digits", "stage": "search", "status": "FINISHED",
        "run_id": ["a", "b", "c"], "parent_run_id": "p", "config_hash": ["ha", "hb", "hc"],
        "val_acc": [0.90, 0.95, 0.80], "test_acc": [0.99, 0.91, 0.999], "train_acc": 1.0,
        "params_trainable": [10, 20, 30], "params_dense": 30, "weights_nonzero": [10, 20, 30], "weight_sparsity": 0.0,
        "neurons_active": 5,
        "neuron_sparsity": 0.0, "hoyer": 0.1, "act_corr": 0.2, "weight_cos": 0.1, "dead_units": 0, "epochs": 4,
        "seconds": 1.0, "diverged": False})
    table = best_table(runs)
    assert table.loc[0, "config_hash"] == "hb" and table.loc[0, "test_acc"] == 0.91 and table.loc[0, "trials"] == 3
    runs.loc[1, "status"] = "KILLED"
    assert best_table(runs).loc[0, "config_hash"] == "ha"
    runs.loc[0, "diverged"] = True
    assert best_table(runs).loc[0, "config_hash"] == "hc"


def test_pruning_curve_is_logged_once_even_when_the_final_result_arrives_again(store, tmp_path):
    """A driver that died after logging the curve but before the epoch's metrics sees the final result again:
    the curve's metrics are not duplicated and its table is replaced, not appended to."""
    curve = {"percent": [0, 50, 100], "nodes_removed": [0, 8, 16], "weights_nonzero": [90, 45, 0],
             "val_acc": [0.4, 0.3, 0.1], "test_acc": [0.4, 0.25, 0.1]}
    trial = SimpleNamespace(trial_id="t1", config=CONFIG, last_result={})
    cb = make_callback(store)
    cb.on_trial_start(0, [], trial)
    for e in (1, 2, 3):
        cb.on_trial_result(0, [], trial, result(e))
    cb.writer.flush()
    run_id = cb._runs["t1"]
    tracking.log_pruning_curve(store.client, run_id, curve, "first driver")   # then the driver died
    revived = pickle.loads(pickle.dumps(cb))
    revived.on_trial_start(0, [], trial)
    revived.on_trial_result(0, [], trial, {**result(4), "pruning": curve})
    revived.on_trial_result(0, [], trial, {**result(4), "pruning": curve})  # a retry: skipped altogether
    revived.on_experiment_end([])
    assert history(store.client, run_id, "pruned_test_acc") == [0, 50, 100]
    assert [m.value for m in sorted(store.client.get_metric_history(run_id, "pruned_val_acc"), key=lambda m: m.step)] == [0.4, 0.3, 0.1]
    assert history(store.client, run_id) == [1, 2, 3, 4]
    table = json.loads(open(store.client.download_artifacts(run_id, "pruning_curve.json", str(tmp_path))).read())
    assert table["columns"] == list(curve) and len(table["data"]) == 3


def test_epochs_a_killed_driver_had_not_written_are_filled_in_from_the_resumed_trials_history(store):
    """The first driver wrote epoch 1 only (2 and 3 were still queued when it died); Tune restores the trial from
    its epoch-3 checkpoint, whose first report (epoch 4) carries the trained history (workflows/trainable.py)."""
    from sparsebench.workflows.trainable import HISTORY_KEY

    trial = SimpleNamespace(trial_id="t1", config=CONFIG, last_result={})
    cb = make_callback(store)
    cb.on_trial_start(0, [], trial)
    cb.on_trial_result(0, [], trial, result(1))
    cb.on_experiment_end([])
    run_id = cb._runs["t1"]
    revived = pickle.loads(pickle.dumps(cb))
    revived.on_trial_start(0, [], trial)
    restored = [{**result(e), "diverged": False} for e in (1, 2, 3)]
    revived.on_trial_result(0, [], trial, {**result(4), HISTORY_KEY: json.dumps(restored)})
    revived.on_experiment_end([])
    assert history(store.client, run_id) == [1, 2, 3, 4]              # each epoch once, none missing
    assert history(store.client, run_id, "val_acc") == [1, 2, 3, 4]
    assert [m.value for m in sorted(store.client.get_metric_history(run_id, "train_loss"), key=lambda m: m.step)] == \
        [pytest.approx(1.0 / e) for e in (1, 2, 3, 4)]
    assert HISTORY_KEY not in store.client.get_run(run_id).data.metrics


class CountingClient:
    """Wraps a real client: counts log_batch calls, can hold the writer inside its first one, or fail."""

    def __init__(self, real, fail: bool = False):
        self.real, self.fail, self.calls = real, fail, 0
        import threading
        self.entered, self.release = threading.Event(), threading.Event()

    def log_batch(self, run_id, **kw):
        self.calls += 1
        self.entered.set()
        self.release.wait(30)
        if self.fail:
            raise ConnectionError("tracking server unreachable after retries")
        return self.real.log_batch(run_id, **kw)

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_queued_epochs_of_a_run_are_coalesced_while_the_server_is_slow(store):
    from sparsebench.workflows.trial import _Writer

    run_id = store.client.create_run(store.exp_id).info.run_id
    slow = CountingClient(store.client)
    w = _Writer(slow)
    w.metrics(run_id, {"val_acc": 0.1}, step=1)
    assert slow.entered.wait(30)             # the writer is inside the first request...
    for e in range(2, 11):                   # ...while nine more epochs arrive without waiting for it
        w.metrics(run_id, {"val_acc": 0.1 * e}, step=e)
    slow.release.set()
    w.flush()
    assert slow.calls == 2                   # the nine queued epochs went in one request
    assert history(store.client, run_id, "val_acc") == list(range(1, 11))


def test_a_write_that_fails_after_the_clients_retries_stops_the_driver(store):
    from sparsebench.workflows.trial import _Writer

    run_id = store.client.create_run(store.exp_id).info.run_id
    broken = CountingClient(store.client, fail=True)
    broken.release.set()
    w = _Writer(broken)
    w.metrics(run_id, {"val_acc": 0.1}, step=1)
    with pytest.raises(RuntimeError, match="writing to the MLflow tracking store failed: tracking server unreachable"):
        w.flush()
    with pytest.raises(RuntimeError, match="tracking server unreachable"):
        w.metrics(run_id, {"val_acc": 0.2}, step=2)


def test_epochs_arriving_within_the_linger_go_in_one_request(store):
    from sparsebench.workflows.trial import LINGER_SECONDS, _Writer

    run_id = store.client.create_run(store.exp_id).info.run_id
    counting = CountingClient(store.client)
    counting.release.set()                   # a fast store: coalescing comes from the linger alone
    w = _Writer(counting)
    for e in range(1, 6):                    # five epochs over ~0.1 s, well within the linger
        w.metrics(run_id, {"val_acc": 0.1 * e}, step=e)
        time.sleep(LINGER_SECONDS / 50)
    w.flush()
    assert counting.calls == 1
    assert history(store.client, run_id, "val_acc") == list(range(1, 6))


def test_a_flush_does_not_wait_for_the_linger(store, monkeypatch):
    import sparsebench.workflows.trial as trial

    monkeypatch.setattr(trial, "LINGER_SECONDS", 3600.0)
    run_id = store.client.create_run(store.exp_id).info.run_id
    w = trial._Writer(store.client)
    w.metrics(run_id, {"val_acc": 0.5}, step=1)
    done = threading.Thread(target=w.flush)
    done.start()
    done.join(60)                            # the linger is an hour: only the flush can end it this soon
    assert not done.is_alive()
    assert history(store.client, run_id, "val_acc") == [1]
