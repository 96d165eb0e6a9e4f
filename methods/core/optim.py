"""Optimizers and learning-rate schedules shared by every method (built from `TrainConfig`)."""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import torch

from .config import TrainConfig

# Schedules the Trainer steps after every optimizer step; the others it steps once per epoch.
PER_STEP_SCHEDULES = ("piecewise",)


def make_optimizer(params: Iterable, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    # `momentum` is beta1 for the Adam family, so one search-space key covers all three optimizers.
    betas = (cfg.momentum, 0.999)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamax":
        return torch.optim.Adamax(params, lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay)
    raise ValueError(f"train.optimizer={cfg.optimizer!r}")  # unreachable: TrainConfig validates choices


def steps_per_epoch(n_train: int, cfg: TrainConfig) -> int:
    """Optimizer steps in one epoch: floor(n / b) with `drop_last` (demo.py's DataLoader(drop_last=True)), else ceil."""
    return n_train // cfg.batch_size if cfg.drop_last else math.ceil(n_train / cfg.batch_size)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig,
                   steps: int = 0) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per epoch by the training loop, or once per optimizer step for `PER_STEP_SCHEDULES` (which need
    `steps`, the optimizer steps per epoch). LambdaLR scales every group's initial rate by the same factor, so groups
    keep their ratio (e.g. the Lp methods' mixing rate train.lr / batch_size beside train.lr)."""
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    if cfg.schedule == "piecewise":
        if steps < 1:
            raise ValueError(f"the piecewise schedule needs the steps per epoch, got {steps}")
        knots = [k * cfg.epochs for k in cfg.piecewise_knots]
        values = list(cfg.piecewise_values)

        def factor(done: int) -> float:
            # LpSS optimizer/sparse_training.py SparseOptimiser.step: step_number += 1, then lr =
            # PiecewiseLinear(knots, vals)(step_number / len(loader)) (core.py: np.interp). So the k-th step (1-based)
            # trains at interp(k / steps); LambdaLR passes the number of steps already done, k - 1.
            return float(np.interp((done + 1) / steps, knots, values))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)
