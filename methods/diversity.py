"""Neuron diversification (Paper A: Kovalenko, Kordik, Friedjungova, "Dynamic Neural Diversification",
arXiv 2109.09612): a dense MLP trained with a decorrelation penalty on its hidden neurons, whose weight is
constant, decays over the epochs, or is switched on only while the measured diversity is low ("dynamic").

Only Paper A's abstract is known: the penalties and schedules are the reconstructions listed in
shared/papers/diversification.md section 2.1, each behind an option; the decorrelated initialisation is
`model.decor_init`, shared with every MLP-based method (methods/dense.py, methods/decorrelation.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from . import decorrelation
from .base import Method
from .config import spec
from .dense import Dense, MLPConfig
from .registry import register_method

SCHEDULES = ("constant", "exp_decay", "linear", "gated")


@dataclass(frozen=True)
class DiversityConfig(MLPConfig):
    # Dossier section 2.1 (all [RECONSTRUCTION]). Default act_pearson: bounded in [0, 1] and scale-free, so one
    # `lam` means the same at every width and activation scale (DeCov grows with both).
    penalty: str = spec("act_pearson", choices=decorrelation.PENALTIES,
                        help="decov | act_pearson (hidden activations), weight_cos (hidden weight rows), "
                             "ncl (units feeding the output)")
    lam: float = spec(0.1, ge=0.0, help="penalty weight lambda_0")
    # Dossier section 1.3-4: "dynamic" is unknown; the abstract places the benefit early in training.
    lam_schedule: str = spec("constant", choices=SCHEDULES,
                             help="constant; exp_decay: lam * lam_decay^(epoch-1); linear: lam * (1 - (epoch-1)/epochs); "
                                  "gated: lam while the batch's mean |Pearson| of hidden activations (mean over hidden "
                                  "layers) > gate_threshold")
    lam_decay: float = spec(0.5, gt=0.0, le=1.0, help="per-epoch factor of exp_decay")
    gate_threshold: float = spec(0.2, ge=0.0, lt=1.0, help="gated: mean |Pearson| above which the penalty is on")


@register_method("diversity")
class Diversity(Dense):
    """Dense MLP + decorrelation penalty. Reports `reg_weight` (mean lambda over the epoch's steps, so the
    fraction of steps a gate was open is reg_weight / lam) and `reg_penalty` (mean unweighted penalty)."""

    Config = DiversityConfig
    needs_hidden = True

    def __init__(self, cfg, info):
        super().__init__(cfg, info)
        self.epochs_done = 0
        self._reset_sums()

    def _reset_sums(self) -> None:
        # Device tensors, summed per step without a host sync; read once per epoch by epoch_metrics().
        self._sum_weight: torch.Tensor | float = 0.0
        self._sum_penalty: torch.Tensor | float = 0.0
        self._steps = 0

    def epoch_weight(self) -> float:
        """lambda of the epoch being trained (1-based epoch = epochs_done + 1) before any gate."""
        m, e = self.cfg.model, self.epochs_done + 1
        if m.lam_schedule == "exp_decay":
            return m.lam * m.lam_decay ** (e - 1)
        if m.lam_schedule == "linear":
            return m.lam * (1.0 - (e - 1) / self.cfg.train.epochs)
        return m.lam

    def penalty(self, model: nn.Module, hidden: list[torch.Tensor]) -> torch.Tensor:
        kind = self.cfg.model.penalty
        layers = model.weight_layers()
        if kind == "decov":
            return torch.stack([decorrelation.decov(h) for h in hidden]).mean()
        if kind == "act_pearson":
            return torch.stack([decorrelation.act_pearson(h) for h in hidden]).mean()
        if kind == "weight_cos":
            return torch.stack([decorrelation.weight_cos(l.effective_weight()) for l in layers[:-1]]).mean()
        # ncl: the last hidden layer's units are the members whose sum (through the output weights) is the logits.
        return decorrelation.ncl(hidden[-1], layers[-1].effective_weight())

    def extra_loss(self, model, x, out, hidden):
        if not hidden:  # no hidden layer: nothing to decorrelate
            return None
        weight = self.epoch_weight()
        if weight == 0.0:
            return None
        pen = self.penalty(model, hidden)
        lam = torch.as_tensor(weight, dtype=pen.dtype, device=pen.device)
        if self.cfg.model.lam_schedule == "gated":
            # The gate reads the batch's own diversity: the mean over hidden layers of each layer's mean |Pearson|
            # (the act_pearson penalty itself, reused when that is the penalty). On the device: no host sync.
            if self.cfg.model.penalty == "act_pearson":
                corr = pen.detach()
            else:
                with torch.no_grad():
                    corr = torch.stack([decorrelation.act_pearson(h) for h in hidden]).mean()
            lam = torch.where(corr > self.cfg.model.gate_threshold, lam, torch.zeros_like(lam))
        self._sum_weight = self._sum_weight + lam
        self._sum_penalty = self._sum_penalty + pen.detach()
        self._steps += 1
        return lam * pen

    def epoch_metrics(self) -> dict[str, float]:
        n = max(self._steps, 1)
        vals = torch.stack([torch.as_tensor(self._sum_weight, dtype=torch.float64).cpu(),
                            torch.as_tensor(self._sum_penalty, dtype=torch.float64).cpu()]).tolist()
        self._reset_sums()
        return {"reg_weight": vals[0] / n, "reg_penalty": vals[1] / n}

    def after_epoch(self, model, optimizer, epoch: int) -> None:
        self.epochs_done = epoch

    def state_dict(self) -> dict[str, Any]:
        return {"epochs_done": self.epochs_done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epochs_done = state["epochs_done"]
