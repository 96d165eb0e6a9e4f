"""How often a trial checkpoints (workflows/checkpointing.py): by time, and always after its final epoch."""
from __future__ import annotations

import pytest

from sparsebench.workflows.checkpointing import CHECKPOINT_SECONDS, CheckpointCadence
from sparsebench.workflows.cli import _settings, build_parser


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def epochs_checkpointed(cadence: CheckpointCadence, clock: Clock, epoch_seconds: float, epochs: int) -> list[int]:
    out = []
    for epoch in range(1, epochs + 1):
        clock.now += epoch_seconds
        if cadence.due(final=epoch == epochs):
            out.append(epoch)
    return out


@pytest.mark.parametrize("seconds,epoch_seconds,expected", [
    (10.0, 3.0, [4, 8, 12, 13]),        # every 12 s of training (the first >= 10 s after the start), and the last
    (10.0, 0.5, [20, 40, 43]),
    (10.0, 30.0, [1, 2, 3]),            # epochs longer than the interval: every epoch
    (0.0, 0.001, [1, 2, 3, 4]),         # 0: every epoch
    (1e9, 1.0, [7]),                    # never by time: only the final epoch
])
def test_checkpoints_follow_the_clock_and_the_final_epoch_is_always_kept(seconds, epoch_seconds, expected):
    clock = Clock()
    cadence = CheckpointCadence(seconds, clock)
    assert epochs_checkpointed(cadence, clock, epoch_seconds, expected[-1]) == expected


def test_the_interval_counts_from_the_last_checkpoint_not_from_a_grid():
    clock = Clock()
    cadence = CheckpointCadence(10.0, clock)
    clock.now += 15
    assert cadence.due(final=False)             # 15 s after the start
    clock.now += 6
    assert not cadence.due(final=False)         # 6 s after that checkpoint (21 s would be past a 20 s grid line)
    clock.now += 4
    assert cadence.due(final=False)


def test_the_command_line_passes_the_cadence_to_search_and_reproduce():
    p = build_parser()
    args = p.parse_args(["search", "--methods", "dense"])
    assert _settings(args, ["dense"]).checkpoint_seconds == CHECKPOINT_SECONDS
    args = p.parse_args(["search", "--methods", "dense", "--checkpoint-seconds", "0"])
    assert _settings(args, ["dense"]).checkpoint_seconds == 0.0
    assert p.parse_args(["reproduce", "lp_sphere", "--checkpoint-seconds", "2.5"]).checkpoint_seconds == 2.5
