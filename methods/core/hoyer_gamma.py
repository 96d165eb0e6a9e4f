"""Expected Hoyer sparsity of a weight row on the unit Lp sphere under a Gamma hypothesis (Paper D, arXiv 2103.16013).

The paper derives "the expected Hoyer sparsity under a Gamma-distribution hypothesis"; its printed formula has not
been read, so this is our reconstruction of it, not the paper's equation. The hypothesis: the magnitudes of the
LpSGD feature vector v = sign(w)|w|^(p-1) (methods/nn/lpsgd.py) are i.i.d. Gamma(k, theta); then the weights are
|w_i| = |v_i|^a with a = 1 / (p - 1) (the back map W = sign(v)|v|^(1/(p-1)) of the authors' LpCGD.step,
WilliamLiPro/LpSS optimizer/lpcgd.py). With the moments E|w|^m = theta^(a m) Gamma(k + a m) / Gamma(k) and the law of
large numbers for L1 = sum |w_i| and L2^2 = sum w_i^2 (theta cancels: Hoyer's measure is scale-free):

    E[||w||_1 / ||w||_2]  ->  sqrt(d) r,      r = Gamma(k + a) / sqrt(Gamma(k) Gamma(k + 2a))         (1)
    E[H]                  ->  sqrt(d) (1 - r) / (sqrt(d) - 1)                                          (2)

with Hoyer's measure H(w) = (sqrt(d) - ||w||_1/||w||_2) / (sqrt(d) - 1) (Hoyer, JMLR 5:1457, 2004, eq. 1; the
authors' `Hoyer_layer_sparsity`, optimizer/myFunction.py). At k = 1: H -> 0.29 at p = 2 (exponential weights,
r = 1/sqrt 2) and H -> 1 as p -> 1+.

(2) is the d -> infinity limit. It holds once L2^2 / d has concentrated, i.e. when d is large against the squared
coefficient of variation of w^2, c = E w^4 / (E w^2)^2 - 1 = Gamma(k) Gamma(k + 4a) / Gamma(k + 2a)^2 - 1.
`limit_holds` is our criterion d >= 10 c: there (2) is within 0.02 (worst measured 0.015) of the finite-d
expectation on the grid of tests/test_hoyer_gamma.py (p 1.07..6, k 0.5..2, fan-ins 25..3136; 91 of its 180 points). Close to p = 1 the tail of |v|^a is so heavy
that the few largest entries dominate both norms: ||w||_1/||w||_2 >= 1 always, while (1) goes to 0, so (2)
overshoots (even above 1). `monte_carlo` gives the finite-d expectation under the same hypothesis there.
"""
from __future__ import annotations

import math

import numpy as np

LIMIT_FACTOR = 10.0   # our validity criterion of (2): d >= LIMIT_FACTOR * c (module docstring)


def _exponent(p: float) -> float:
    if not p > 1.0:
        raise ValueError(f"Lp exponent p must be > 1 (the weights are |v|^(1/(p-1))), got {p}")
    return 1.0 / (p - 1.0)


def _check(d: int, k: float) -> None:
    if d < 2 or k <= 0:
        raise ValueError(f"fan-in d must be >= 2 and the Gamma shape k > 0, got d={d}, k={k}")


def ratio_limit(p: float, k: float = 1.0) -> float:
    """r of eq. (1): E|w| / sqrt(E w^2) for |w| = Gamma(k)^(1/(p-1)); in log space (Gamma(k + 2a) overflows at p ~ 1)."""
    a = _exponent(p)
    return math.exp(math.lgamma(k + a) - 0.5 * (math.lgamma(k) + math.lgamma(k + 2 * a)))


def expected_hoyer(p: float, d: int, k: float = 1.0) -> float:
    """Eq. (2): the large-fan-in expected Hoyer sparsity of a row of `d` weights on the unit Lp sphere under the
    Gamma(k) hypothesis. Outside `limit_holds` it is an overestimate (it can exceed 1 near p = 1)."""
    _check(d, k)
    s = math.sqrt(d)
    return s * (1.0 - ratio_limit(p, k)) / (s - 1.0)


def tail_weight(p: float, k: float = 1.0) -> float:
    """c = E w^4 / (E w^2)^2 - 1, the squared coefficient of variation of w^2 (module docstring)."""
    a = _exponent(p)
    return math.exp(math.lgamma(k) + math.lgamma(k + 4 * a) - 2 * math.lgamma(k + 2 * a)) - 1.0


def limit_holds(p: float, d: int, k: float = 1.0) -> bool:
    """Whether eq. (2) is a good approximation at this fan-in (our criterion d >= 10 c)."""
    return d >= LIMIT_FACTOR * tail_weight(p, k)


def monte_carlo(p: float, d: int, k: float = 1.0, rows: int = 2000, seed: int = 0) -> tuple[float, float]:
    """(mean, standard error) of the Hoyer sparsity of `rows` sampled rows of d weights |w_i| = v_i^(1/(p-1)),
    v_i ~ Gamma(k, 1) i.i.d.: the finite-d expectation under the hypothesis. The powers are taken in log space and
    each row divided by its largest entry (Hoyer's measure is scale-free), so p close to 1 does not overflow."""
    _check(d, k)
    a = _exponent(p)
    rng = np.random.default_rng(seed)
    log_w = a * np.log(rng.gamma(k, 1.0, size=(rows, d)))
    w = np.exp(log_w - log_w.max(axis=1, keepdims=True))
    s = math.sqrt(d)
    h = (s - w.sum(axis=1) / np.sqrt((w * w).sum(axis=1))) / (s - 1.0)
    return float(h.mean()), float(h.std(ddof=1) / math.sqrt(rows))
