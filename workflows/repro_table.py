"""A reproduction's table: the published values next to what the runs measured (pure pandas, no MLflow).

Input: one record per finished run (`RunRecord`), as `workflows/reproduce.py` reads them from MLflow. Output:
one row per (dataset, swept value, arm) with the experiment's metric, plus one row per published cell that
states another quantity (a maximum, a ratio to a baseline arm, a point of a pruning curve). Each row has the
published value (None when unknown: shown as "unknown", never 0), the measured mean and std over seeds, the
number of seeds, the difference, whether it is within the cell's tolerance, params_trainable, the measured
weight sparsity, the provenance and the hash of the setting (config without seed) whose runs made it.

Relative statistics are paired by seed (the same seed gives both arms the same data order): the per-seed
ratio is averaged, and only seeds both arms finished count.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .protocol import Experiment, Published

COLUMNS = ["experiment", "dataset", "setting", "arm", "method", "quantity", "published", "measured", "std", "n",
           "difference", "within", "tolerance", "params_trainable", "weight_sparsity", "source", "setting_hash"]


@dataclass
class RunRecord:
    experiment: str
    dataset: str
    sweep: str                         # JSON of the swept value ("null" without a sweep)
    arm: str
    method: str
    seed: int
    setting_hash: str                  # RunConfig.without_seed().hash(): the setting repeated over seeds
    metrics: dict[str, float]          # last epoch's values
    history: dict[str, list[float]] = field(default_factory=dict)    # metric -> values of epochs 1..E
    curve: dict[int, dict[str, float]] = field(default_factory=dict)  # percent -> {"test_acc": ..., ...}
    run_id: str = ""
    commit: str = ""                   # the driver's git commit (with "+dirty" for uncommitted changes)
    hardware: str = ""                 # where the trial ran (workflows/hardware.py, summarised)
    wall_s: float | None = None        # the run's wall time (MLflow start to end), seconds


def _value(r: RunRecord, metric: str, statistic: str, percent: int | None) -> float | None:
    if percent is not None:
        return r.curve.get(int(percent), {}).get(metric)
    if metric == "params_ratio":
        m = r.metrics
        return m["params_trainable"] / m["params_dense"] if m.get("params_dense") else None
    if statistic == "max":
        h = r.history.get(metric)
        return max(h) if h else None
    if statistic == "relative_gain_epochs_1_5":
        h = r.history.get(metric)
        return float(np.mean(h[:5])) if h else None
    return r.metrics.get(metric)


def per_seed(records: list[RunRecord], cell: Published | None, metric: str, baseline: list[RunRecord] | None) -> list[float]:
    """The measured quantity of each seed (paired with the baseline arm's seed for relative statistics)."""
    statistic = cell.statistic if cell else "final"
    percent = cell.percent if cell else None
    # A seed without a finite value (a diverged run's NaN, a metric it did not log) is left out, not averaged.
    mine = {r.seed: v for r in records if _finite(v := _value(r, metric, statistic, percent))}
    if baseline is None:
        return [v for _, v in sorted(mine.items())]
    base = {r.seed: v for r in baseline if _finite(v := _value(r, metric, statistic, percent))}
    out = []
    for seed in sorted(set(mine) & set(base)):
        a, b = mine[seed], base[seed]
        if b == 0:
            continue
        out.append(a / b - 1.0 if statistic == "relative_gain_epochs_1_5" else a / b)
    return out


def _finite(v: Any) -> bool:
    return v is not None and math.isfinite(v)


def _quantity(metric: str, cell: Published | None) -> str:
    if cell is None or cell.statistic == "final" and cell.percent is None:
        return metric
    if cell.percent is not None:
        q = f"{metric} at {cell.percent}% nodes removed"
        return q if cell.statistic == "final" else f"{q}, {cell.statistic} vs {cell.baseline}"
    if cell.statistic == "max":
        return f"max {metric} over epochs"
    if cell.statistic == "relative_gain_epochs_1_5":
        return f"{metric} epochs 1-5, gain over {cell.baseline}"
    return f"{metric} / {cell.baseline}"


def _applies(cell: Published, arm: str, dataset: str, sweep_key: str | None, sweep_value: Any) -> bool:
    if cell.arm != arm or (cell.dataset is not None and cell.dataset != dataset):
        return False
    return sweep_key is None or sweep_key not in cell.at or cell.at[sweep_key] == sweep_value


def _stats(values: list[float]) -> tuple[float | None, float | None, int]:
    if not values:
        return None, None, 0
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else None, len(arr)   # no spread of one seed


def _mean(records: list[RunRecord], key: str) -> float | None:
    vals = [r.metrics[key] for r in records if r.metrics.get(key) is not None]
    return float(np.mean(vals)) if vals else None


def reproduction_table(exp: Experiment, records: list[RunRecord]) -> pd.DataFrame:
    """Rows in the protocol's order: datasets, then swept values, then arms."""
    groups: dict[tuple, list[RunRecord]] = {}
    for r in records:
        if r.experiment == exp.name:
            groups.setdefault((r.dataset, r.sweep, r.arm), []).append(r)
    rows = []
    for ds in exp.datasets:
        for value in exp.sweep_values or (None,):
            sweep = json.dumps(value)
            setting = f"{exp.sweep_key}={sweep}" if exp.sweep_key else ""
            for arm, arm_flat in exp.arms.items():
                recs = groups.get((ds, sweep, arm), [])
                cells = [c for c in exp.published if _applies(c, arm, ds, exp.sweep_key, value)]
                plain = [c for c in cells if c.statistic == "final" and c.percent is None and c.metric == exp.metric]
                others = [c for c in cells if c not in plain]
                shown: list[Published | None] = plain or [None]
                for cell in [*shown, *others]:
                    metric = cell.metric if cell else exp.metric
                    base = groups.get((ds, sweep, cell.baseline), []) if cell and cell.baseline else None
                    mean, std, n = _stats(per_seed(recs, cell, metric, base))
                    published = cell.value if cell else None
                    diff = None if mean is None or published is None else mean - published
                    tol = cell.tolerance if cell else None   # mean is finite here: non-finite seeds were dropped
                    rows.append({
                        "published_state": "none" if cell is None else ("unknown" if cell.value is None else "value"),
                        "experiment": exp.name, "dataset": ds, "setting": setting, "arm": arm,
                        "method": arm_flat["method"], "quantity": _quantity(metric, cell), "published": published,
                        "measured": mean, "std": std, "n": n, "difference": diff,
                        "within": None if diff is None or tol is None else bool(abs(diff) <= tol + 1e-12),
                        "tolerance": tol, "params_trainable": _mean(recs, "params_trainable"),
                        "weight_sparsity": _mean(recs, "weight_sparsity"),
                        "source": (cell.provenance + (f"; tolerance: {cell.tolerance_source}" if cell.tolerance_source else "")
                                   + (f"; claim: {cell.claim}" if cell.claim else "")) if cell else "none published",
                        "setting_hash": recs[0].setting_hash if recs else "",
                    })
    df = pd.DataFrame(rows, columns=[*COLUMNS, "published_state"])
    df.attrs["published_state"] = df.pop("published_state").tolist()   # for rendering: none vs unknown
    return df


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def render_table(df: pd.DataFrame, fmt: str) -> str:
    """markdown | csv | latex | html. CSV keeps raw numbers (empty when unknown); the others format them, with
    an unknown published value written "unknown" and no measurement "n/a"."""
    if fmt == "csv":
        return df.to_csv(index=False)
    shown = df.copy().astype(object)
    states = df.attrs.get("published_state") or ["unknown"] * len(df)
    # "none": the paper publishes nothing for this row; "unknown": it states the quantity without a number.
    shown["published"] = [(st if v is None or pd.isna(v) else _fmt(v)) for v, st in zip(df["published"], states)]
    shown["measured"] = [("n/a" if m is None or pd.isna(m) else _fmt(m) + ("" if s is None or pd.isna(s) else f" ± {_fmt(s)}"))
                         for m, s in zip(df["measured"], df["std"])]
    shown["difference"] = ["" if d is None or pd.isna(d) else f"{round(float(d), 4) + 0.0:+.4f}" for d in df["difference"]]
    shown["within"] = [{True: "yes", False: "NO"}.get(w, "") if w is not None and not pd.isna(w) else "" for w in df["within"]]
    shown["tolerance"] = [_fmt(t) for t in df["tolerance"]]
    shown["params_trainable"] = [_fmt(int(p)) if p is not None and not pd.isna(p) else "" for p in df["params_trainable"]]
    shown["weight_sparsity"] = [_fmt(s, 3) for s in df["weight_sparsity"]]
    shown = shown.drop(columns=["std"])
    if fmt == "markdown":
        return shown.to_markdown(index=False, disable_numparse=True)
    if fmt == "latex":
        return shown.to_latex(index=False, escape=True)
    if fmt == "html":
        return shown.to_html(index=False)
    raise ValueError(f"unknown format {fmt!r}; allowed: markdown, csv, latex, html")
