"""Hold points: a trial that stops at a chosen epoch until it is released, so that a fault test injects its fault
(a killed worker, driver or node, a stopped tracking server) at a point the test controls, never by racing the
clock (issue 21). The technique is that of failpoints in databases and kernels: a named place in the product that
does nothing unless the environment arms it.

Armed by two variables, passed by the driver to every trial (runner.init_ray):

- `SPARSEBENCH_HOLD_DIR`: a folder that the test and the trials share;
- `SPARSEBENCH_HOLD_EPOCH`: the epoch after whose report each trial holds, once.

A trial reaching that epoch reports it with a checkpoint (so the epoch it resumes from is known exactly), writes
`<trial id>.held`, and waits until `<trial id>.release` or `all.release` exists. A trial that held once never
holds again (a retry or a restored trial runs on). The driver writes `<trial id>.saved` (the epoch) once Tune has
registered the trial's checkpoint and saved its experiment state (HoldCallback.on_trial_save, which Tune calls
after both: ray/tune/execution/tune_controller.py, `_on_saving_result`), and `<trial id>.reported` (the epoch) for
every result it processed. Unarmed, each call is one dict lookup.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from ray import tune

DIR_VAR, EPOCH_VAR = "SPARSEBENCH_HOLD_DIR", "SPARSEBENCH_HOLD_EPOCH"
ENV_VARS = (DIR_VAR, EPOCH_VAR)
POLL_SECONDS = 0.05


def armed() -> tuple[Path, int] | None:
    folder, epoch = os.environ.get(DIR_VAR), os.environ.get(EPOCH_VAR)
    if not folder or not epoch:
        return None
    return Path(folder), int(epoch)


def _write(path: Path, text: str) -> None:
    """Atomically (a reader polling for the file never sees it empty)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def due(trial_id: str, epoch: int) -> bool:
    """Whether this report is the trial's hold point (its report then carries a checkpoint)."""
    hold = armed()
    return hold is not None and epoch == hold[1] and not (hold[0] / f"{trial_id}.held").exists()


def wait(trial_id: str, epoch: int) -> None:
    """Called after the report `due` chose: mark the trial held and wait for its release."""
    folder, _ = armed()
    _write(folder / f"{trial_id}.held", str(epoch))
    while not ((folder / f"{trial_id}.release").exists() or (folder / "all.release").exists()):
        time.sleep(POLL_SECONDS)


class HoldCallback(tune.Callback):
    """Driver side: `<trial id>.saved` holds the epoch of the trial's latest registered checkpoint, and
    `<trial id>.reported` the epoch of the latest result the driver processed. Tests read these, not Tune's
    result.json, which Tune writes through a buffered file (a line shows up kilobytes or a trial's end later)."""

    def __init__(self, folder: Path):
        self.folder = folder

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        _write(self.folder / f"{trial.trial_id}.reported", str(result.get("epoch", 0)))

    def on_trial_save(self, iteration, trials, trial, **info) -> None:
        _write(self.folder / f"{trial.trial_id}.saved", str((trial.last_result or {}).get("epoch", 0)))


def callbacks() -> list:
    hold = armed()
    return [HoldCallback(hold[0])] if hold else []
