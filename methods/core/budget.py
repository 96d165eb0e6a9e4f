"""Sizing a configuration to a parameter budget, in closed form (issue 16).

`Method.size_to_budget(cfg, info, budget, metric)` returns the config whose network *at the end of training*
(the one a user would deploy: after SET's pruning rounds, after the spectral filter's node removal) has `budget`
scalars by `metric`, computed from formulas of the layer shapes only: no network is built. The formulas count
exactly what `methods/core/metrics.py` measures (`params_trainable`, `weights_nonzero`, and `flops_inference`,
which for the MLPs that budgets size is 2 x weights_nonzero); where a method's final
size depends on random draws (Erdos-Renyi masks) the formula gives the expected count, and the trial's
measured size decides whether it was feasible (`within_budget`).

This module holds what every family shares: the metric names, the error, the tolerance, layer counts of MLP
chains and the two solvers (integer widths, a real-valued knob). It imports nothing above `config`.
"""
from __future__ import annotations

from typing import Callable, Sequence

from .config import ConfigError

BUDGET_METRICS = ("params_trainable", "weights_nonzero", "flops_inference")
# What a FLOP budget is in weight nonzeros: an MLP's inference costs 2 FLOPs per nonzero weight (a multiply and an
# add; methods/core/metrics.py, flops_inference), so it is sized as a weights_nonzero budget of half the FLOPs.
FLOPS_PER_NONZERO = {"flops_inference": 2}
# A trial whose measured size is more than 5% off its budget is infeasible (issue 16: "more than 5% off").
TOLERANCE = 0.05
MAX_WIDTH = 1 << 20   # upper end of the width search: far beyond any MLP a budget run trains


class BudgetError(ConfigError):
    """A budget a method cannot reach with this configuration (below its minimum size, or no size within 5%)."""


def check_metric(metric: str) -> str:
    if metric not in BUDGET_METRICS:
        raise BudgetError(f"unknown budget metric {metric!r}; allowed: {', '.join(BUDGET_METRICS)}")
    return metric


def counted_as(metric: str, budget: float) -> tuple[str, float]:
    """The scalar count a method's formulas size (params_trainable | weights_nonzero) and the budget in it."""
    per = FLOPS_PER_NONZERO.get(metric)
    return ("weights_nonzero", budget / per) if per else (metric, budget)


def within_budget(size: float, budget: float, tolerance: float = TOLERANCE) -> bool:
    """True when `size` is within `tolerance` (relative) of `budget`."""
    return abs(size - budget) <= tolerance * budget


def chain(n_in: int, hidden: Sequence[int], n_out: int) -> list[tuple[int, int]]:
    """(n_in, n_out) of every weight layer of the MLP (input, *hidden, classes)."""
    widths = (n_in, *hidden, n_out)
    return list(zip(widths[:-1], widths[1:]))


def batchnorm_params(hidden: Sequence[int], batchnorm: bool) -> int:
    """Affine BatchNorm1d after every hidden layer (methods/nn/models.py): a weight and a bias per unit."""
    return 2 * sum(hidden) if batchnorm else 0


def solve_width(size: Callable[[int], float], budget: float, what: str, min_width: int = 1) -> int:
    """The integer width w >= min_width whose size(w) (nondecreasing in w) is nearest to `budget`; BudgetError
    when even the smallest width is more than 5% above it."""
    smallest = size(min_width)
    if smallest > budget * (1 + TOLERANCE):
        raise BudgetError(f"budget {budget:g} is below the smallest {what} ({smallest:g} at width {min_width}): unreachable")
    lo, hi = min_width, min_width
    while size(hi) < budget and hi < MAX_WIDTH:   # doubling, then bisection: O(log w) formula evaluations
        lo, hi = hi, min(hi * 2, MAX_WIDTH)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if size(mid) < budget else (lo, mid)
    return min((lo, hi), key=lambda w: (abs(size(w) - budget), w))


def solve_knob(size: Callable[[float], float], budget: float, lo: float, hi: float, iters: int = 60) -> float:
    """The value x in [lo, hi] whose size(x) (nondecreasing in x) is nearest to `budget`, by bisection."""
    a, b = lo, hi
    for _ in range(iters):
        mid = 0.5 * (a + b)
        a, b = (mid, b) if size(mid) < budget else (a, mid)
    return min((a, b), key=lambda x: abs(size(x) - budget))


def check_reached(size: float, budget: float, method: str, metric: str) -> None:
    """The closed-form size of a sized config must lie within 5% of its budget (widths are integers, masks whole)."""
    if not within_budget(size, budget):
        raise BudgetError(f"budget {budget:g} {metric}: {method} reaches {size:g} at best (more than "
                          f"{TOLERANCE:.0%} off): unreachable")


def uniform_hidden(hidden: Sequence[int], width: int) -> tuple[int, ...]:
    """Every hidden layer at `width`, keeping the depth (at least one hidden layer)."""
    return (width,) * max(1, len(hidden))
