"""The Tune trainable's control flow (workflows/trainable.py) with Tune and Ray replaced by recorders: which
epochs are reported, which reports carry a checkpoint, and what a trial restored from a checkpoint sends."""
from __future__ import annotations

import contextlib
import json
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import sparsebench.workflows.trainable as trainable_module
from sparsebench.workflows import failpoints
from sparsebench.methods import RunConfig, Trainer
from sparsebench.workflows.trainable import HISTORY_KEY, STATE_FILE, trainable

CONFIG = {"method": "dense", "data.dataset": "digits", "model.hidden": [16], "train.epochs": 3}


class FakeTune:
    """`tune.get_checkpoint` / `tune.report` / `tune.Checkpoint` as a trial sees them; reports are recorded with
    the epoch their checkpoint holds."""

    def __init__(self, restore_from: Path | None = None):
        self.restore_from, self.reports = restore_from, []
        self.Checkpoint = SimpleNamespace(from_directory=lambda d: Path(d))
        self.get_context = lambda: SimpleNamespace(get_trial_id=lambda: "abc_00000")

    def get_checkpoint(self):
        if self.restore_from is None:
            return None
        return SimpleNamespace(as_directory=lambda: contextlib.nullcontext(str(self.restore_from)))

    def report(self, metrics, checkpoint=None):
        held = None
        if checkpoint is not None:   # the temporary folder is gone after report returns: read it now
            held = torch.load(Path(checkpoint) / STATE_FILE, map_location="cpu", weights_only=False)["epoch"]
        self.reports.append((metrics, held))


@pytest.fixture
def fake_ray(monkeypatch):
    context = SimpleNamespace(get_assigned_resources=lambda: {"CPU": 1.0}, get_node_id=lambda: "node-a")
    monkeypatch.setattr(trainable_module, "ray", SimpleNamespace(get_runtime_context=lambda: context))


def run(monkeypatch, tmp_path, restore_from=None, **kw) -> FakeTune:
    fake = FakeTune(restore_from)
    monkeypatch.setattr(trainable_module, "tune", fake)
    trainable(dict(CONFIG), **kw)
    return fake


def test_every_epoch_is_reported_and_checkpoints_follow_the_cadence(monkeypatch, tmp_path, fake_ray, digits):
    fake = run(monkeypatch, tmp_path, checkpoint_seconds=1e9)
    assert [m["epoch"] for m, _ in fake.reports] == [1, 2, 3]
    assert [held for _, held in fake.reports] == [None, None, 3]   # by time never: the final epoch only
    assert all(HISTORY_KEY not in m for m, _ in fake.reports)
    assert fake.reports[0][0]["trial.node_id"] == "node-a"
    fake = run(monkeypatch, tmp_path, checkpoint_seconds=0)
    assert [held for _, held in fake.reports] == [1, 2, 3]


def test_a_trial_restored_mid_training_sends_its_history_and_continues(monkeypatch, tmp_path, fake_ray, digits):
    tr = Trainer(RunConfig.from_flat(CONFIG))
    tr.run_epoch()
    tr.save(tmp_path / STATE_FILE)
    fake = run(monkeypatch, tmp_path, restore_from=tmp_path, checkpoint_seconds=1e9)
    assert [m["epoch"] for m, _ in fake.reports] == [2, 3]
    assert [m["epoch"] for m in json.loads(fake.reports[0][0][HISTORY_KEY])] == [1]
    assert HISTORY_KEY not in fake.reports[1][0]


def test_a_trial_restored_at_its_final_checkpoint_trains_nothing_and_reports_its_last_epoch(
        monkeypatch, tmp_path, fake_ray, digits):
    tr = Trainer(RunConfig.from_flat(CONFIG))
    tr.fit()
    final = tmp_path / "final"
    final.mkdir()
    tr.save(final / STATE_FILE)
    fake = run(monkeypatch, tmp_path, restore_from=final)
    ((metrics, held),) = fake.reports
    assert held is None and metrics["epoch"] == 3
    assert metrics["seconds"] == tr.history[-1]["seconds"]    # the saved epoch, not a new one
    assert [m["epoch"] for m in json.loads(metrics[HISTORY_KEY])] == [1, 2, 3]


def test_an_armed_hold_point_checkpoints_its_epoch_and_waits_for_the_release_once(monkeypatch, tmp_path, fake_ray, digits):
    """workflows/failpoints.py: the trial reports epoch 2 with a checkpoint, marks itself held and trains nothing
    more until the test releases it; a second attempt of the same trial does not hold again."""
    monkeypatch.setenv(failpoints.DIR_VAR, str(tmp_path))
    monkeypatch.setenv(failpoints.EPOCH_VAR, "2")
    fake = FakeTune()
    monkeypatch.setattr(trainable_module, "tune", fake)
    worker = threading.Thread(target=trainable, args=(dict(CONFIG),), kwargs={"checkpoint_seconds": 1e9}, daemon=True)
    worker.start()
    held = tmp_path / "abc_00000.held"
    for _ in range(6000):                         # until the trial says it is held (60 s at most: a hung trial)
        if held.exists() or not worker.is_alive():
            break
        worker.join(0.01)
    assert held.read_text() == "2"
    assert [(m["epoch"], ckpt) for m, ckpt in fake.reports] == [(1, None), (2, 2)]   # the hold epoch is checkpointed
    assert worker.is_alive()                      # and it waits: nothing but the release lets it go on
    (tmp_path / "abc_00000.release").touch()
    worker.join(60)
    assert not worker.is_alive()
    assert [(m["epoch"], ckpt) for m, ckpt in fake.reports] == [(1, None), (2, 2), (3, 3)]
    (tmp_path / "abc_00000.release").unlink()
    fake = run(monkeypatch, tmp_path, checkpoint_seconds=1e9)    # held once already: runs through
    assert [(m["epoch"], ckpt) for m, ckpt in fake.reports] == [(1, None), (2, None), (3, 3)]
