"""The budget axis of `sparsebench search --budgets 2k,8k,32k` (issue 16).

Each (method, budget) is a study of its own, with the same number of trials as every other cell. A trial's config
is sampled from the method's space, then sized to the budget by the method's closed-form hook
(`Method.size_to_budget`, methods/core/budget.py): the keys the hook sets (a width, an ER epsilon, a target
sparsity) override the sampled ones, and the other hyperparameters are tuned at that size. The driver never builds
a network to size one. The measured size at the end of training decides feasibility: a trial more than 5% off its
budget gets `budget_feasible = 0` and never enters a comparison (`best_config`, `tables.best_table`).
"""
from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from typing import Any

from sparsebench.methods import RunConfig, get_method
from sparsebench.methods.core.budget import BUDGET_METRICS, BudgetError, check_metric, within_budget
from sparsebench.methods.data import DataInfo

from .search_space import DefineByRun

FEASIBLE_KEY = "budget_feasible"     # metric of a trial: 1 within 5% of its budget, 0 not
SUFFIXES = {"": 1, "k": 1_000, "m": 1_000_000}
ALLOWED = "positive numbers, optionally with a k or m suffix, comma-separated (e.g. 2k,8k,32k)"


def parse_budgets(text: str) -> tuple[float, ...]:
    """'2k,8000,1.5m' -> (2000.0, 8000.0, 1500000.0); BudgetError naming the bad entry."""
    items = [t.strip() for t in str(text).split(",")]
    if not any(items):
        raise BudgetError(f"--budgets {text!r}: empty; give {ALLOWED}")
    out = []
    for item in items:
        m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kKmM]?)", item)
        if not m:
            raise BudgetError(f"--budgets: {item!r} is not a budget; give {ALLOWED}")
        out.append(float(m.group(1)) * SUFFIXES[m.group(2).lower()])
    return check_budgets(out)


def check_budgets(budgets) -> tuple[float, ...]:
    """Finite, > 0, no repeats (the Python API's and the protocol's entry point too)."""
    out = []
    for b in budgets:
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not math.isfinite(b) or b <= 0:
            raise BudgetError(f"budget {b!r}: must be a finite number > 0 ({ALLOWED})")
        if float(b) in out:
            raise BudgetError(f"budget {b:g} is given twice")
        out.append(float(b))
    if not out:
        raise BudgetError(f"budgets: empty; give {ALLOWED}")
    return tuple(out)


def output_layer_size(info: DataInfo, metric: str) -> int:
    """The output layer alone, as a linear classifier of the inputs (weights, plus its biases for
    params_trainable, 2 FLOPs a weight for flops_inference): the floor below which a budget is refused (issue 16,
    "Bad input")."""
    weights = info.in_features * info.num_classes
    if metric == "flops_inference":
        return 2 * weights
    return weights if metric == "weights_nonzero" else weights + info.num_classes


def check_floor(budgets: tuple[float, ...], info: DataInfo, metric: str) -> None:
    floor = output_layer_size(info, metric)
    for b in budgets:
        if b < floor:
            raise BudgetError(f"budget {b:g} {metric} is below the output layer alone on {info.name} "
                              f"({info.in_features} inputs x {info.num_classes} classes = {floor}); give budgets >= {floor}")


def label(budget: float) -> str:
    """2000.0 -> '2k', 1500.0 -> '1500', 2500000.0 -> '2.5m': the budget's name in tables and run names."""
    for suffix, unit in (("m", 1_000_000), ("k", 1_000)):
        if budget >= unit and (budget / unit) == round(budget / unit, 3):
            return f"{budget / unit:g}{suffix}"
    return f"{budget:g}"


def sized_overrides(flat: dict[str, Any], info: DataInfo, budget: float, metric: str) -> dict[str, Any]:
    """The flat keys the method's hook changes to size `flat` to `budget` (closed form, no network)."""
    cfg = RunConfig.from_flat(flat)
    sized = get_method(cfg.method).size_to_budget(cfg, info, budget, metric)
    before = cfg.flat()
    return {k: v for k, v in sized.flat().items() if before.get(k) != v}


@dataclass(frozen=True)
class SizedDefineByRun:
    """DefineByRun, then the sampled config sized to the budget: OptunaSearch merges the returned keys over the
    sampled ones (ray.tune.search.optuna `_suggest_from_define_by_run_func`: {**captured, **returned})."""

    inner: DefineByRun
    info: DataInfo
    budget: float
    metric: str

    def __call__(self, trial) -> dict[str, Any]:
        sampled = {p.key: p.suggest(trial) for p in self.inner.params}   # config values (list choices decoded)
        constants = dict(self.inner.constants)
        try:
            return {**constants, **sized_overrides({**sampled, **constants}, self.info, self.budget, self.metric)}
        except BudgetError as e:
            # Out of the hook's reach for this sample: it trains as sampled and its measured size marks it infeasible.
            warnings.warn(f"trial not sized to budget {self.budget:g}: {e}", stacklevel=1)
            return constants


def feasible(metrics: dict[str, Any], budget: float, metric: str) -> bool:
    return metric in metrics and metrics[metric] is not None and within_budget(float(metrics[metric]), budget)


__all__ = ["BUDGET_METRICS", "BudgetError", "FEASIBLE_KEY", "SizedDefineByRun", "check_budgets", "check_floor",
           "check_metric", "feasible", "label", "output_layer_size", "parse_budgets", "sized_overrides"]
