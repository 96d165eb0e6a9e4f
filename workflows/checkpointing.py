"""How often a trial saves its state. No Ray or torch here: the command line reads the default before Ray starts."""
from __future__ import annotations

import time

# Saving the Trainer's state and handing it to Tune took ~66 ms per epoch in benchmarks/orchestration.py, a third
# of a 176 ms epoch. At most one checkpoint per 10 s bounds that to under 1 % of a trial, and a failure to 10 s
# of work trained again. Epochs longer than this are checkpointed every epoch, as before.
CHECKPOINT_SECONDS = 10.0


class CheckpointCadence:
    """Whether this epoch's report carries a checkpoint: `seconds` after the last one (or the trial's start), and
    always after the final epoch, so a finished trial's state is kept. `seconds=0` checkpoints every epoch."""

    def __init__(self, seconds: float, clock=time.monotonic):
        self.seconds, self.clock = seconds, clock
        self.last = clock()

    def due(self, final: bool) -> bool:
        now = self.clock()
        if final or now - self.last >= self.seconds:
            self.last = now
            return True
        return False
