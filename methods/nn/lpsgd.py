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

import math
from typing import Iterable

import torch
import torch.nn.functional as F

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
        # One multi-tensor momentum and SGD update per free group; one vectorised sphere update over all the
        # constrained tensors of all groups.
        lp_p, lp_d, lp_eta, lp_exp = [], [], [], []
        for g in self.param_groups:
            params = [p for p in g["params"] if p.grad is not None]
            if not params:
                continue
            if g["lp"] is None:
                torch._foreach_add_(params, self._directions(params, g["momentum"], g["nesterov"]), alpha=-g["lr"])
                continue
            work = [self._work(p) for p in params]
            lp_p += params
            lp_d += self._directions(params, g["momentum"], g["nesterov"], out=[w[0].view(p.shape)
                                                                                 for w, p in zip(work, params)])
            lp_eta += [g["lr"]] * len(params)
            lp_exp += [g["lp"]] * len(params)
        if lp_p:
            self._sphere_update(lp_p, lp_d, lp_eta, lp_exp)
        return loss

    def _work(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Two scratch tensors (rows, fan-in) per constrained tensor, reused every step: a fresh allocation of a
        large tensor costs about one more pass over it (page faults) on CPU. Not optimizer state: checkpoints
        do not carry them."""
        work = self.__dict__.setdefault("_scratch", {})
        shape = (p.shape[0], p.numel() // max(p.shape[0], 1))
        w = work.get(p)
        if w is None or w[0].shape != shape or w[0].dtype != p.dtype or w[0].device != p.device:
            w = work[p] = (p.new_empty(shape), p.new_empty(shape))
        return w

    def _directions(self, params: list, mu: float, nesterov: bool, out: list | None = None) -> list:
        """d of every parameter, exactly as torch.optim.SGD (dampening 0): buf = mu buf + g (first step: buf = g),
        d = g + mu buf with Nesterov (into `out` when given), else buf; d = g without momentum. The gradients are
        never written."""
        grads = [p.grad for p in params]
        if not mu:
            return grads
        bufs, old, old_g = [], [], []
        for p, d in zip(params, grads):
            st = self.state[p]
            buf = st.get("momentum_buffer")
            if buf is None:
                buf = st["momentum_buffer"] = d.clone()
            else:
                old.append(buf)
                old_g.append(d)
            bufs.append(buf)
        if old:
            torch._foreach_mul_(old, mu)
            torch._foreach_add_(old, old_g)
        if not nesterov:
            return bufs
        if out is None:
            return torch._foreach_add(grads, bufs, alpha=mu)
        for d, b, o in zip(grads, bufs, out):
            torch.add(d, b, alpha=mu, out=o)
        return out

    def _sphere_update(self, params: list, ds: list, etas: list, lps: list) -> None:
        """The module docstring's sphere step for all constrained tensors at once, in 2-D row views (rows, fan-in).

        The same math as computing ||d_r||_q, v, ||v_r||_q and W = sign(v) |v / ||v_r||_q|^(1/(p-1)) one after the
        other, rearranged so that every entry goes through exp and log twice instead of through `pow` three times
        (`pow` costs ~8 passes over memory on CPU, exp and log one each):
          ||d_r||_q = m_r (sum_j exp(q (log|d_rj| - log m_r)))^(1/q),   m_r = max_j |d_rj|  (max-scaled, as row_norm)
          U = (|v| / m_r)^(1/(p-1)) = exp((log|v| - log m_r) / (p-1)),  m_r = max_j |v_rj|  (U in [0, 1])
          sum_j (|v_rj| / m_r)^q = sum_j |v_rj| U_rj / m_r               since q = 1 + 1/(p-1): no third power
          W = sign(v) U (m_r / ||v_r||_q)^(1/(p-1))
        exp's argument is clamped at log(smallest normal float) + 1/2, and what the clamp reached is set to 0: CPUs
        take ~100x longer on subnormal numbers, which exp would make of every small entry (most entries, once
        p -> 1 has sparsified a layer). So a |d| term that small is left out of its norm (it changes no digit of a
        sum whose largest term is 1), and a weight below ~2e-38 (float32; ~4e-308 in float64) is stored as an exact
        0 rather than as a subnormal number."""
        qs = [lp / (lp - 1.0) for lp in lps]
        es = [1.0 / (lp - 1.0) for lp in lps]
        tiny = [torch.finfo(p.dtype).tiny for p in params]            # per tensor: dtypes may differ
        floor_exp = [math.log(t) + 0.5 for t in tiny]
        zero_below = [math.exp(f) * 1.01 for f in floor_exp]
        # Row views. A parameter is written through its view, or through a copy where it is not contiguous
        # (channels_last); the state v is kept contiguous.
        ps = [p.view(p.shape[0], -1) if p.is_contiguous() else p.reshape(p.shape[0], -1).clone() for p in params]
        vs, s1, s2 = [], [], []
        for p, p2, lp in zip(params, ps, lps):
            st = self.state[p]
            v = st.get("v")
            if v is None:                                          # ||v_r||_q = 1 because ||p_r||_p = 1
                v = st["v"] = signed_pow(p, lp - 1.0)
            if not v.is_contiguous():
                v = st["v"] = v.contiguous()
            vs.append(v.view(p2.shape))
            a, b = self._scratch[p]                                # made by step()
            s1.append(a)
            s2.append(b)
        d2 = [d.reshape(p2.shape) for d, p2 in zip(ds, ps)]
        # ||d_r||_q, max-scaled, in log space (s2).
        for d, x in zip(d2, s2):
            torch.abs(d, out=x)
        m = [x.amax(1, keepdim=True) for x in s2]
        torch._foreach_clamp_min_(m, tiny)           # any m > 0 gives the same norm; a zero row stays 0
        lm = torch._foreach_log(m)
        torch._foreach_log_(s2)
        torch._foreach_mul_(lm, [-q for q in qs])
        for x, l, q in zip(s2, lm, qs):              # q (log|d| - log m), one pass
            torch.add(l, x, alpha=q, out=x)
        torch._foreach_clamp_min_(s2, floor_exp)
        torch._foreach_exp_(s2)
        s = [x.sum(1, keepdim=True) for x in s2]
        nd = torch._foreach_mul(torch._foreach_pow(s, [1.0 / q for q in qs]), m)
        torch._foreach_clamp_min_(nd, EPS)
        # v <- (1 - eta) v - eta d / ||d||: with 0 < eta < 1 as v/(1 - eta) - eta/(1 - eta) d/||d|| (one pass), whose
        # normalised value is the same; its norm is 1/(1 - eta) times the true one, so the eps floor scales alike.
        ks = [1.0 - eta for eta in etas]
        torch._foreach_reciprocal_(nd)
        torch._foreach_mul_(nd, [-eta / k if k > 0 else -eta for eta, k in zip(etas, ks)])
        for v, d, n, k in zip(vs, d2, nd, ks):
            (v if k > 0 else v.mul_(k)).addcmul_(d, n)
        floors = [EPS / k if k > 0 else EPS for k in ks]
        # U (s1) and ||v_r||_q; d is no longer needed, so s1 may hold U.
        for v, x in zip(vs, s2):
            torch.abs(v, out=x)
        m = [x.amax(1, keepdim=True) for x in s2]
        torch._foreach_clamp_min_(m, tiny)
        lm = torch._foreach_log(m)
        for x, u in zip(s2, s1):
            torch.log(x, out=u)
        torch._foreach_mul_(lm, [-e for e in es])
        for u, l, e in zip(s1, lm, es):              # (log|v| - log m) / (p - 1), one pass
            torch.add(l, u, alpha=e, out=u)
        torch._foreach_clamp_min_(s1, floor_exp)
        torch._foreach_exp_(s1)
        for u, z in zip(s1, zero_below):
            F.threshold_(u, z, 0.0)
        s = [torch.linalg.vecdot(x, u).unsqueeze_(1) for x, u in zip(s2, s1)]   # m sum (|v|/m)^q
        torch._foreach_div_(s, m)
        nv = torch._foreach_mul(torch._foreach_pow(s, [1.0 / q for q in qs]), m)
        torch._foreach_clamp_min_(nv, floors)
        # W = sign(v) U (m / ||v||)^(1/(p-1)); v <- v / ||v|| (kept normalised in the state).
        c = torch._foreach_pow(torch._foreach_div(m, nv), es)
        for p2, u, y, v in zip(ps, s1, c, vs):
            torch.copysign(u.mul_(y), v, out=p2)
        torch._foreach_div_(vs, nv)
        for p, p2 in zip(params, ps):
            if not p.is_contiguous():
                p.copy_(p2.view(p.shape))
