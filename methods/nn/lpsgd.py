"""LpSGD: training on the unit Lp sphere (Li, Yang, Li, Lu, Xie, arXiv 2103.16013; authors' WilliamLiPro/LpSS).

Every constrained weight tensor keeps each output unit's row (an FC row, a conv filter: all dims but 0) on the
unit Lp sphere, ||w_r||_p = 1, p > 1. The step is the authors' `LpCGD.step` (WilliamLiPro/LpSS
optimizer/lpcgd.py, commit 9c8cbc1; the paper's printed equations are unknown), with q = p / (p - 1) the dual exponent:

    d      = g + mu * buf,  buf = mu * buf + g         Nesterov momentum, dampening 0 (first step: buf = g)
    v      = sign(W) |W|^(p-1)                         the "feature vector", kept in the optimizer state
    d_r   <- d_r / (||d_r||_q + eps)                   per row, in the dual norm
    v     <- (1 - eta) v - eta d                       eta: the group's rate, a mixing rate here
    v_r   <- v_r / (||v_r||_q + eps)                   back onto the unit Lq sphere
    W      = sign(v) |v|^(1 / (p-1))                   so ||W_r||_p = 1 (up to eps)

Parameters of groups without `lp` follow plain (Nesterov) momentum SGD in the same optimizer, exactly as
torch.optim.SGD with dampening 0 and no weight decay (tests/test_lp_sphere.py compares them). Every group has its
own `lp`, so p can differ per layer.

Numerics (our measurement, not the paper's): at p = 1.07, q = 15.3 and |x|^q underflows in float32 for |x| < ~3e-3 (and
|x|^(1/(p-1)) = |x|^14.3 for |x| < ~1e-3). Every Lp norm here is computed on the row divided by its maximum
absolute entry, so the powers stay in [0, 1] and the largest term is exactly 1: the norm never collapses to eps and
never overflows, whatever the scale of the gradient (the authors' code relies on a summed loss to keep gradients
large). The authors add eps = 1e-6 to every norm; here it is a floor (max(norm, eps)) instead, so that a
normalised row has norm exactly 1: with the sum, ||W_r||_p would sit ~1.4e-5 below 1 at p = 1.07 (the error
is raised to the power 1/(p-1) = 14.3). Only an all-zero row is affected, and it stays zero either way.

`masks`: tensors (same shape as a parameter, bool) that the forward pass multiplies in (SemiMaskedLinear of
methods/families/lp_sphere.py). They play no part in the step: a masked entry gets no gradient, its feature value decays by
(1 - eta) and is renormalised with its row, and W keeps that latent value; a regrown entry resumes from it
(the authors' semi-pruning as their `SparseLpSSOptimizer` behaves; the paper's definition is unknown).
"""
from __future__ import annotations

from typing import Iterable

import torch

EPS = 1e-6   # lpcgd.py's 1e-6, used here as a floor of every norm


def row_norm(x: torch.Tensor, r: float, eps: float = EPS) -> torch.Tensor:
    """(sum over all dims but 0 of |x|^r)^(1/r) per row, at least eps, shaped to broadcast against x. Max-scaled: the row
    is divided by its largest |entry| before the power, so r up to ~100 is safe in float32."""
    a = x.reshape(x.shape[0], -1).abs()          # one |x| for both the maximum and the powers
    m = a.amax(1, keepdim=True)
    safe = torch.where(m > 0, m, torch.ones_like(m))
    n = m * a.div_(safe).pow_(r).sum(1, keepdim=True).pow(1.0 / r)
    return n.clamp_min(eps).view(-1, *([1] * (x.dim() - 1)))


def signed_pow(x: torch.Tensor, a: float) -> torch.Tensor:
    # copysign: one op fewer than sign(x) * |x|^a, and the same values (|x|^a >= 0; a zero keeps x's sign bit).
    return torch.copysign(x.abs().pow_(a), x)


def project_(w: torch.Tensor, p: float) -> torch.Tensor:
    """w <- w / ||w_r||_p per row, in place (the authors project every constrained weight when the optimizer is made)."""
    return w.div_(row_norm(w, p))


def check_p(p: float) -> float:
    if not p > 1.0:
        raise ValueError(f"Lp exponent p must be > 1 (q = p/(p-1) and 1/(p-1) diverge at 1), got {p}")
    return float(p)


class LpSGD(torch.optim.Optimizer):
    """Param groups: dict(params=[...], lp=p) with p > 1 for row-constrained tensors (projected onto the sphere here),
    lp=None for plain momentum SGD. `lr` is the step of the SGD groups and the mixing rate eta of the Lp groups."""

    def __init__(self, params: Iterable, lr: float, momentum: float = 0.9, nesterov: bool = True):
        if lr <= 0 or not 0 <= momentum < 1:
            raise ValueError(f"LpSGD: lr must be > 0 and momentum in [0, 1), got lr={lr}, momentum={momentum}")
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, lp=None))
        with torch.no_grad():
            for g in self.param_groups:
                if g["lp"] is not None:
                    g["lp"] = check_p(g["lp"])
                    for p in g["params"]:
                        if p.dim() < 2:
                            raise ValueError(f"LpSGD: a constrained tensor needs rows (dim >= 2), got shape {tuple(p.shape)}")
                        project_(p, g["lp"])

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for g in self.param_groups:
            lr, mu, lp = g["lr"], g["momentum"], g["lp"]
            for p in g["params"]:
                if p.grad is None:
                    continue
                d, st = p.grad, self.state[p]
                if mu:
                    buf = st.get("momentum_buffer")
                    if buf is None:
                        buf = st["momentum_buffer"] = d.clone()
                    else:
                        buf.mul_(mu).add_(d)
                    d = d.add(buf, alpha=mu) if g["nesterov"] else buf
                if lp is None:
                    p.add_(d, alpha=-lr)
                    continue
                q = lp / (lp - 1.0)
                v = st.get("v")
                if v is None:
                    v = st["v"] = signed_pow(p, lp - 1.0)   # ||v_r||_q = 1 because ||p_r||_p = 1
                v.mul_(1.0 - lr).sub_(d / row_norm(d, q), alpha=lr)
                v.div_(row_norm(v, q))
                p.copy_(signed_pow(v, 1.0 / (lp - 1.0)))
        return loss
