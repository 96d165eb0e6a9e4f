"""Neuron diversification (Paper A: Kovalenko, Kordik, Friedjungova, "Dynamic Neural Diversification",
arXiv 2109.09612): a dense MLP trained with a decorrelation penalty on its hidden neurons, whose weight is
constant, decays over the epochs, or is switched on only while the measured diversity is low ("dynamic").

Only Paper A's abstract is known: the penalties and schedules are our reconstructions (docs/methods.md,
"Notes on reconstructions"), each behind an option; the decorrelated initialisation is
`model.decor_init`, shared with every MLP-based method (methods/families/dense.py, methods/nn/decorrelation.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..nn import decorrelation
from ..core.config import spec
from ._mlp import MLPConfig
from .dense import Dense
from ..core.registry import register_method

SCHEDULES = ("constant", "exp_decay", "linear", "gated")


@dataclass(frozen=True)
class DiversityConfig(MLPConfig):
    # All our reconstructions (the paper's terms are unknown). Default act_pearson: bounded in [0, 1] and
    # scale-free, so one `lam` means the same at every width and activation scale (DeCov grows with both).
    penalty: str = spec("act_pearson", choices=decorrelation.PENALTIES,
                        help="decov | act_pearson (hidden activations), weight_cos (mean cos^2 of hidden weight "
                             "rows), ncl (units feeding the output)")
    lam: float = spec(0.1, ge=0.0, help="penalty weight lambda_0")
    # What the paper's "dynamic" means is unknown; its abstract (arXiv 2109.09612) places the benefit early in
    # training.
    lam_schedule: str = spec("constant", choices=SCHEDULES,
                             help="constant; exp_decay: lam * lam_decay^(epoch-1); linear: lam * (1 - (epoch-1)/epochs); "
                                  "gated: lam while the training batch's mean |Pearson| between hidden units (pairs pooled "
                                  "over hidden layers, as act_corr) > gate_threshold")
    lam_decay: float = spec(0.5, gt=0.0, le=1.0, help="per-epoch factor of exp_decay")
    gate_threshold: float = spec(0.2, ge=0.0, lt=1.0, help="gated: mean |Pearson| above which the penalty is on")


@register_method("diversity")
class Diversity(Dense):
    summary = "dense MLP + a decorrelation penalty on hidden neurons (DeCov, activation Pearson, weight cosine, NCL)"
    source = "Kovalenko et al., arXiv 2109.09612 (terms reconstructed from the abstract)"
    """Dense MLP + decorrelation penalty. Reports `reg_weight` (mean lambda over the epoch's steps, so the
    fraction of steps a gate was open is reg_weight / lam) and `reg_penalty` (mean unweighted penalty, absent
    in an epoch where the weight was 0 throughout)."""

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
            return decorrelation.pooled_act_pearson(hidden)
        if kind == "weight_cos":
            return torch.stack([decorrelation.weight_cos(l.effective_weight()) for l in layers[:-1]]).mean()
        # ncl: the last hidden layer's units are the members whose sum (through the output weights) is the logits.
        return decorrelation.ncl(hidden[-1], layers[-1].effective_weight())

    def extra_loss(self, model, x, out, hidden):
        if not hidden:  # no hidden layer: nothing to decorrelate
            return None
        weight = self.epoch_weight()   # a Python float: a tensor made from it on a GPU would sync every step
        if weight == 0.0:
            return None
        pen = self.penalty(model, hidden)
        if self.cfg.model.lam_schedule == "gated":
            # The gate reads the training batch's diversity: mean |Pearson| over the within-layer pairs of all
            # hidden layers (the logged act_corr's definition, on this batch in train mode, units with std < 1e-3
            # left out). It stays on the device: the gate is a 0/1 factor, not a Python branch.
            if self.cfg.model.penalty == "act_pearson":
                corr = pen.detach()
            else:
                with torch.no_grad():
                    corr = decorrelation.pooled_act_pearson(hidden)
            lam = (corr > self.cfg.model.gate_threshold).to(pen.dtype) * weight
        else:
            lam = weight
        self._sum_weight = self._sum_weight + lam
        self._sum_penalty = self._sum_penalty + pen.detach()
        self._steps += 1
        return lam * pen

    def epoch_metrics(self) -> dict[str, float]:
        if not self._steps:  # the penalty was off all epoch: nothing was computed, so nothing is reported
            out = {"reg_weight": 0.0}
        else:
            w, p = (torch.as_tensor(v, dtype=torch.float64) for v in (self._sum_weight, self._sum_penalty))
            w, p = torch.stack([w.to(p.device), p]).cpu().tolist()   # one transfer per epoch
            out = {"reg_weight": w / self._steps, "reg_penalty": p / self._steps}
        self._reset_sums()
        return out

    def after_epoch(self, model, optimizer, epoch: int) -> None:
        self.epochs_done = epoch

    def state_dict(self) -> dict[str, Any]:
        return {"epochs_done": self.epochs_done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epochs_done = state["epochs_done"]
