"""Decorrelation of hidden neurons: the penalties of the `diversity` method and the decorrelated
initialisation every MLP-based method may use (MLPConfig.decor_init).

Paper A (Kovalenko, Kordik, Friedjungova, arXiv 2109.09612) is known only from its abstract: none of these
equations is from it. They are the standard decorrelation terms consistent with the abstract, our
reconstruction (docs/methods.md, "Notes on reconstructions"); each function cites its own source. Every term
is a Gram-matrix operation (no loop over the O(H^2) pairs) and is finite for dead units (a variance floor, not
a NaN Pearson r). `act_pearson` is the function behind the logged `act_corr` (methods/core/metrics.py), applied to
the training batch in train mode rather than to the fixed evaluation batch.

L1 or L2 on correlations: a mean of |r| is an L1 objective; it drives most pairs to exactly 0 and is
indifferent to a few pairs becoming near-duplicates, which is the redundancy Paper A is about. Measured on a
128x64 layer (more units than inputs), 100 Adam steps on mean |cos| left 9 pairs with |cos| > 0.9 (max 0.999,
from 0.47); mean cos^2 left none (max 0.32). The weight objectives (init and `weight_cos`) are therefore mean
squared cosines; `act_pearson` keeps the |r| of the usual mean-|Pearson r| definition and DeCov is squared.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .layers import weight_layers
from .correlation import mean_abs_pearson, pair_mean, row_cosines, units_2d


def decov(a: torch.Tensor) -> torch.Tensor:
    """DeCov (Cogswell et al., "Reducing overfitting in deep networks by decorrelating representations",
    ICLR 2016, arXiv 1511.06068): 0.5 (||C||_F^2 - ||diag C||^2), C the batch covariance of the activations
    a [B, H]. Zero (with a zero gradient) exactly when C is diagonal; grows with the activations' scale."""
    a = units_2d(a)
    c = a - a.mean(0)
    cov = c.T @ c / len(a)
    return 0.5 * (cov.pow(2).sum() - cov.diagonal().pow(2).sum())


# Units whose batch standard deviation is below this are left out of the Pearson penalty. The metric's own
# floor (metrics.DEAD_STD = 1e-6) would let the 1/std of a nearly dead unit give gradients of order 1e6 / B.
PENALTY_DEAD_STD = 1e-3


def act_pearson(a: torch.Tensor, dead_std: float = PENALTY_DEAD_STD) -> torch.Tensor:
    """Mean |Pearson r| over pairs of live units of a [B, H] (the |r| alternative to DeCov, ours): the
    scale-free variant of DeCov, in [0, 1]; (nearly) dead units of the batch are left out."""
    return mean_abs_pearson(a, dead_std)[0]


def pooled_act_pearson(hidden: list[torch.Tensor], dead_std: float = PENALTY_DEAD_STD) -> torch.Tensor:
    """Mean |Pearson r| over the within-layer pairs of every hidden layer pooled (as metrics.diversity pools
    act_corr), on device tensors only."""
    stats = [mean_abs_pearson(a, dead_std) for a in hidden]
    pairs = torch.stack([n for _, n in stats])
    values = torch.stack([v for v, _ in stats])
    return (values * pairs).sum() / pairs.sum().clamp_min(1)


def mean_sq_cosine(w: torch.Tensor, centred: bool = False) -> torch.Tensor:
    """Mean cos^2 between the nonzero rows of w [H, ...] (`centred`: rows minus their mean, i.e. Pearson)."""
    return pair_mean(*row_cosines(w, centred), power=2)[0]


def weight_cos(w: torch.Tensor) -> torch.Tensor:
    """Mean squared cosine between the rows (incoming weight vectors) of w, in [0, 1]: the usual weight-cosine
    penalty (a reconstruction) with cos^2 for |cos| (see the module docstring: |cos| trades many orthogonal
    pairs for a few duplicates)."""
    return mean_sq_cosine(w)


# Floor of the mean squared contribution in `ncl` (contributions below 0.01 RMS are not amplified): a pure
# energy normalisation gives a gradient growing as 1/scale when the activations vanish.
NCL_ENERGY_FLOOR = 1e-4


def ncl(h: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Negative correlation learning (Liu & Yao, Neural Networks 12(10), 1999) among the hidden units that feed
    the output layer, each unit i an ensemble member with contribution f_i = v_ci h_i to logit c (our reading):
    p_i = (f_i - fbar) sum_{j != i} (f_j - fbar) = -(f_i - fbar)^2, so sum_i p_i = -sum_i (f_i - fbar)^2.

    Scaling (ours): sum_i p_i summed over the batch and the logits, divided by the batch's contribution energy
    sum f_i^2 treated as a constant (detached; at least NCL_ENERGY_FLOOR per contribution). The value lies in
    [-1, 0] and the
    gradient keeps Liu & Yao's direction (push each contribution away from the members' mean) with a step that
    does not grow with the weights' scale. Why not the alternatives: the raw term, next to a cross-entropy on
    the sum alone (Liu & Yao pair it with each member's own error), goes to -infinity as cancelling
    contributions grow (f_i = +-t, t -> infinity); dividing by an energy that is differentiated gives
    -1 + (sum_i f_i)^2 / (H sum_i f_i^2), whose minimum pulls every logit to 0 instead of spreading the units.
    h: [B, H] last hidden activations, v: [C, H] output weights."""
    f = units_2d(h)[:, None, :] * v[None, :, :]             # [B, C, H]
    energy = f.detach().pow(2).sum().clamp_min(NCL_ENERGY_FLOOR * f.numel())
    return ncl_sum(h, v) / energy


def ncl_sum(h: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """sum over batch, logits and units of Liu & Yao's p_i (unscaled; see `ncl`)."""
    f = units_2d(h)[:, None, :] * v[None, :, :]
    dev = f - f.mean(-1, keepdim=True)
    return (dev * (dev.sum(-1, keepdim=True) - dev)).sum()   # the Liu-Yao p_i, literally


PENALTIES = ("decov", "act_pearson", "weight_cos", "ncl")


# ----------------------------------------------------------------------------- decorrelated initialisation

def decorrelate_rows_(weight: torch.Tensor, steps: int, lr: float, centred: bool = False,
                      mask: torch.Tensor | None = None) -> torch.Tensor:
    """In place: lower the mean squared cosine (or, `centred`, Pearson) between the rows of `weight` by `steps`
    data-free Adam steps, then give every row back its original L2 norm (a reconstruction
    consistent with Kovalenko & Kordik's ICANN 2023 abstract "Decorrelated weight
    initialization by backpropagation").

    - The norms are restored so that the signal variance is the standard initialisation's; otherwise a
      speed-up could come from the changed scale rather than from the decorrelation.
    - The optimisation runs on unit rows, with the Adam rate divided by sqrt(entries per row), the
      size of a unit row's typical entry: one `lr` then means the same relative step for every layer width.
    - Entries outside `mask` (a sparse layer's missing connections) stay exactly 0; all-zero rows stay 0.
    - The objective is the mean squared cosine: mean |cos| (the obvious form) creates near-duplicate rows
      when a layer has at least as many units as inputs (module docstring).
    - No random numbers are drawn: the result is a function of the random standard draw (deterministic for a
      fixed number of BLAS threads), so it stays random across seeds and leaves the data order and dropout
      streams of the run untouched.
    """
    w0 = weight.detach().to(torch.float64).reshape(weight.shape[0], -1)
    m = None if mask is None else mask.detach().reshape(w0.shape).to(torch.float64)
    if m is not None:
        w0 = w0 * m
    norm0 = w0.norm(dim=1, keepdim=True)
    alive = norm0 > 0
    unit = torch.where(alive, w0 / torch.where(alive, norm0, torch.ones_like(norm0)), w0)
    # The steps run in the weight's own dtype (float32: 2.2x faster than float64 for a 1000x1000 layer on CPU);
    # the norms are restored in float64, so they match the standard draw to float32 rounding.
    u = unit.to(weight.dtype).requires_grad_(True)
    m_work = None if m is None else m.to(weight.dtype)
    per_row = float(m.sum(1).mean()) if m is not None else w0.shape[1]
    opt = torch.optim.Adam([u], lr=lr / math.sqrt(max(per_row, 1.0)))
    with torch.enable_grad():
        for _ in range(steps):
            loss = mean_sq_cosine(u, centred=centred)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if m_work is not None:
                u.grad.mul_(m_work)
            opt.step()
    with torch.no_grad():
        u = u.detach().to(torch.float64)
        if m is not None:
            u = u * m
        norm = u.norm(dim=1, keepdim=True)
        out = torch.where(alive & (norm > 0), u * (norm0 / torch.where(norm > 0, norm, torch.ones_like(norm))), w0)
        weight.copy_(out.reshape(weight.shape).to(weight.dtype))
    return weight


def decorrelate_model_(model: nn.Module, steps: int, lr: float, centred: bool = False) -> nn.Module:
    """Decorrelate every hidden layer of `model` (all weight layers but the output one, whose rows are classes,
    not neurons). A layer without a plain `weight` parameter (e.g. a spectral one) is left alone."""
    done = 0
    for layer in weight_layers(model)[:-1]:
        weight = getattr(layer, "weight", None)
        if isinstance(weight, nn.Parameter) and weight.dim() >= 2:
            decorrelate_rows_(weight, steps, lr, centred=centred, mask=getattr(layer, "mask", None))
            done += 1
        elif hasattr(layer, "coordinates"):
            # A truly sparse layer (methods/nn/sparse_linear.py): the objective couples every pair of rows, so it
            # runs on a transient dense copy at initialisation, the same computation as on the masked layer.
            rows, cols, _ = layer.coordinates()
            w = layer.effective_weight()
            mask = torch.zeros_like(w, dtype=torch.bool).index_put_((rows, cols), torch.tensor(True, device=w.device))
            decorrelate_rows_(w, steps, lr, centred=centred, mask=mask)
            with torch.no_grad():
                layer.values.copy_(w[rows, cols])
            done += 1
    if not done and len(weight_layers(model)) > 1:
        raise ValueError(f"decorrelated initialisation: no hidden layer of {type(model).__name__} has a plain weight "
                         f"matrix to decorrelate")
    return model
