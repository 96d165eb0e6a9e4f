"""Correlation statistics of a layer's units: the mean |Pearson r| of activations and the mean |cosine| between
weight rows, over pairs of units, in Gram-matrix form (no loop over pairs).

Shared by the one metrics module (methods/core/metrics.py: the logged `act_corr`, `weight_cos`, `weight_pearson`)
and the decorrelation regularisers and initialisation (methods/nn/decorrelation.py), so that what a penalty lowers
is exactly what is measured. Differentiable; the penalties call them on the training batch with a higher dead-unit
floor.
"""
from __future__ import annotations

import torch

DEAD_STD = 1e-6     # a unit whose activation varies less than this over the evaluation batch is dead


def pair_mean(g: torch.Tensor, keep: torch.Tensor, power: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of |g_ij|^power over pairs i < j of units `keep` (boolean [H]) of a symmetric [H, H] matrix whose
    rows and columns outside `keep` are 0, and the number of pairs; both 0-dim device tensors. Gram-matrix
    form, no O(H^2) loop over pairs, and no boolean indexing, which would sync a GPU with the
    host at every training step. No pair gives 0 (with a zero gradient), never 0/0."""
    n = keep.sum()
    pairs = n * (n - 1) // 2
    return g.triu(1).abs().pow(power).sum() / pairs.clamp_min(1), pairs


def units_2d(a: torch.Tensor) -> torch.Tensor:
    """Activations [B, H, ...] -> [B, H]: a convolution channel is one unit (its spatial mean)."""
    return a if a.dim() == 2 else a.flatten(2).mean(2)


def live_units(a: torch.Tensor, dead_std: float = DEAD_STD) -> torch.Tensor:
    """Boolean [H]: units whose activation over the batch varies by more than `dead_std` (standard deviation)."""
    a = units_2d(a).detach()
    return a.std(0, unbiased=False) > dead_std if len(a) > 1 else torch.zeros(a.shape[1], dtype=torch.bool, device=a.device)


def mean_abs_pearson(a: torch.Tensor, dead_std: float = DEAD_STD,
                     live: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean |Pearson r| over pairs of live units of activations `a` [B, H] (batch statistics), and the pair
    count. Units whose standard deviation is <= `dead_std` (or outside a given `live`) are left out: their
    columns are zeroed after a floored division, so nothing is 0/0 and they get a zero gradient."""
    a = units_2d(a)
    if live is None:
        live = live_units(a, dead_std)
    c = a - a.mean(0)
    # Floor before the square root: sqrt'(0) is infinite, and inf * 0 would be a NaN gradient for a dead unit.
    std = c.pow(2).mean(0).clamp_min(dead_std ** 2).sqrt()
    z = c / std * live                         # exact for live units, 0 for dead ones
    r = z.T @ z / max(len(a), 1)               # the correlation matrix of the live units, zero-padded
    return pair_mean(r, live)


def row_cosines(w: torch.Tensor, centred: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The cosine matrix [H, H] between the rows of `w` [H, ...] (zero rows give zero rows and columns) and
    the boolean [H] of nonzero rows. `centred`: each row minus its mean first (the weight Pearson
    correlation, docs/methods.md "Notes on reconstructions")."""
    w = w.reshape(w.shape[0], -1)
    if centred:
        w = w - w.mean(1, keepdim=True)
    norm = w.norm(dim=1)
    keep = norm.detach() > 0
    u = w / torch.where(keep, norm, torch.ones_like(norm))[:, None]
    return u @ u.T, keep


def mean_abs_cosine(w: torch.Tensor, centred: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean |cosine| between the nonzero rows of `w` [H, ...] (rows = incoming weight vectors), and the
    pair count."""
    return pair_mean(*row_cosines(w, centred))
