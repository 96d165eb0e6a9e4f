"""Figures logged to MLflow (matplotlib's object API, no pyplot: no global state, no GUI backend on a worker)."""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from sparsebench.methods.data import dataset_label


def pruning_curve_figure(curve: pd.DataFrame, title: str) -> Figure:
    """Accuracy vs the percentage of hidden nodes removed (one line per `<split>_acc` column)."""
    fig = Figure(figsize=(5.5, 4.0), layout="constrained")
    ax = fig.subplots()
    for col in (c for c in curve.columns if c.endswith("_acc")):
        ax.plot(curve["percent"], curve[col], marker="o", label=col.removesuffix("_acc"))
    ax.set_xlabel("hidden nodes removed (%)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0.0, 1.0)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title, fontsize=9)
    return fig


def _errorbar(ax, xs, values, label, **kw):
    pts = sorted((x, float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else np.nan) for x, v in zip(xs, values) if v)
    if pts:
        x, m, s = zip(*pts)
        ax.errorbar(x, m, yerr=s, marker="o", capsize=3, label=f"{label} (measured)", **kw)


def experiment_figures(exp, records) -> dict[str, Figure]:
    """The plots of one reproduced experiment (workflows/protocol.Experiment, repro_table.RunRecord list), by
    file name: accuracy vs % hidden nodes removed where runs carry pruning curves; else the experiment's metric
    vs its swept value when that is a number (sparsity, pruned percentage), or vs params_trainable (widths, no
    sweep). Measured means with std error bars; published values as crosses."""
    import json

    figs: dict[str, Figure] = {}
    numeric = bool(exp.sweep_values) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in exp.sweep_values)
    for ds in exp.datasets:
        recs = [r for r in records if r.experiment == exp.name and r.dataset == ds]
        if not recs:
            continue
        if any(r.curve for r in recs):
            for value in exp.sweep_values or (None,):
                sweep = json.dumps(value)
                sub = [r for r in recs if r.sweep == sweep]
                fig = Figure(figsize=(6.0, 4.2), layout="constrained")
                ax = fig.subplots()
                for i, arm in enumerate(exp.arms):
                    arm_recs = [r for r in sub if r.arm == arm and r.curve]
                    percents = sorted({q for r in arm_recs for q in r.curve})
                    color = f"C{i}"
                    _errorbar(ax, percents, [[r.curve[q][exp.metric] for r in arm_recs if exp.metric in r.curve.get(q, {})]
                                             for q in percents], arm, color=color)
                    pub = [(c.percent, c.value) for c in exp.published if c.arm == arm and c.percent is not None
                           and c.value is not None and c.dataset in (None, ds)
                           and (exp.sweep_key not in c.at or c.at[exp.sweep_key] == value)]
                    if pub:
                        ax.scatter(*zip(*pub), marker="x", color=color, label=f"{arm} (published)")
                ax.set_xlabel("hidden nodes removed (%)")
                ax.set_ylabel(exp.metric)
                ax.set_title(f"{exp.name}, {dataset_label(ds)}" + (f", {exp.sweep_key}={sweep}" if exp.sweep_key else ""), fontsize=9)
                ax.grid(alpha=0.3)
                ax.legend(fontsize=7)
                figs[_name(exp.name, ds, sweep if exp.sweep_key else None, "pruning")] = fig
            continue
        fig = Figure(figsize=(6.0, 4.2), layout="constrained")
        ax = fig.subplots()
        for i, arm in enumerate(exp.arms):
            color = f"C{i}"
            groups = {}
            for r in recs:
                if r.arm == arm:
                    groups.setdefault(r.sweep, []).append(r)
            xs, ys = [], []
            for sweep, rs in groups.items():
                xs.append(json.loads(sweep) if numeric else float(np.mean([r.metrics["params_trainable"] for r in rs])))
                ys.append([r.metrics[exp.metric] for r in rs if r.metrics.get(exp.metric) is not None])
            _errorbar(ax, xs, ys, arm, color=color)
            pub = []
            for c in exp.published:
                if (c.arm != arm or c.value is None or c.statistic != "final" or c.percent is not None
                        or c.metric != exp.metric or c.dataset not in (None, ds)):
                    continue
                if numeric and exp.sweep_key in c.at:
                    pub.append((c.at[exp.sweep_key], c.value))
                elif not numeric and (exp.sweep_key is None or exp.sweep_key in c.at):
                    rs = groups.get(json.dumps(c.at.get(exp.sweep_key)), [])
                    if rs:
                        pub.append((float(np.mean([r.metrics["params_trainable"] for r in rs])), c.value))
            if pub:
                ax.scatter(*zip(*pub), marker="x", color=color, label=f"{arm} (published)")
        if numeric:
            ax.set_xlabel(exp.sweep_key)
        else:
            ax.set_xlabel("trainable parameters")
            ax.set_xscale("log")
        ax.set_ylabel(exp.metric)
        ax.set_title(f"{exp.name}, {dataset_label(ds)}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        figs[_name(exp.name, ds, None, "vs_" + (exp.sweep_key.split(".")[-1] if numeric else "params"))] = fig
    return figs


def _name(exp: str, ds: str, sweep: str | None, what: str) -> str:
    import re

    tag = "" if sweep is None else "_" + re.sub(r"[^A-Za-z0-9.]+", "-", sweep).strip("-")
    # a dataset given as a file is named by its file name (methods/data/load.py dataset_label), not its path
    return f"{exp}_{dataset_label(ds)}{tag}_{what}.png"


# ---- budget comparison (issue 16): pure functions of DataFrames, so they are tested without Ray or MLflow ----
def pareto_front(df: pd.DataFrame, size: str, acc: str = "test_acc") -> pd.Series:
    """True for the rows no other row dominates, larger `acc` and smaller `size` being better: a row is dominated
    when another is at least as good in both and strictly better in one (the Pareto order of multi-objective
    optimisation: the non-dominated set of Deb et al., NSGA-II, IEEE Trans. Evol. Comput. 6(2), 2002, Sec. III-A).
    Equal points are all kept.
    Sorted by size (then accuracy, descending), a row is on the front exactly when its accuracy exceeds that of
    every strictly smaller row, or ties the best of its own size: one pass, O(n log n)."""
    order = df.sort_values([size, acc], ascending=[True, False], kind="mergesort")
    keep = pd.Series(False, index=df.index)
    best_below = -np.inf        # the best accuracy of the rows strictly smaller than the current size
    for s, group in order.groupby(size, sort=True):
        top = group[acc].max()
        if top > best_below:    # the best of this size is not dominated by any smaller row
            keep[group.index[group[acc] == top]] = True
        best_below = max(best_below, top)
    return keep


MARKERS = "osD^vP*X"


def style(i: int) -> dict:
    """The i-th method's colour and marker: 10 colours x 8 markers, so no two of up to 40 methods look alike (the
    registry has 11; colour alone repeats after 10)."""
    return {"color": f"C{i % 10}", "marker": MARKERS[(i // 10 + i) % len(MARKERS)]}


def accuracy_vs_budget_figure(rows: pd.DataFrame, title: str) -> Figure:
    """Test accuracy vs budget (log x), one line per method: the mean over a cell's runs (the final seeds) with
    their standard deviation (ddof=1) as error bars; cells of one run have none."""
    fig = Figure(figsize=(7.4, 4.2), layout="constrained")
    ax = fig.subplots()
    for i, (method, g) in enumerate(rows.dropna(subset=["test_acc"]).groupby("method", sort=True)):
        cells = g.groupby("budget")["test_acc"]
        std = cells.std(ddof=1)
        ax.errorbar(cells.mean().index, cells.mean().values, yerr=std.values, capsize=3, label=method, **style(i))
    ax.set_xscale("log")
    ax.set_xlabel("budget")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3, which="both")
    # Beside the axes: with the 11 registered methods a legend inside covers the points (and the front).
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title(title, fontsize=9)
    return fig


def pareto_figure(trials: pd.DataFrame, size: str, title: str) -> Figure:
    """Every trial's test accuracy vs its measured `size` (log x), coloured by method; the points of the Pareto
    front (`pareto_front`) ringed in black and joined by a step line."""
    fig = Figure(figsize=(7.4, 4.2), layout="constrained")
    ax = fig.subplots()
    pts = trials.dropna(subset=[size, "test_acc"])
    for i, (method, g) in enumerate(pts.groupby("method", sort=True)):
        ax.scatter(g[size], g["test_acc"], s=18, alpha=0.7, label=method, **style(i))
    if not pts.empty:
        front = pts[pareto_front(pts, size)].sort_values(size)
        ax.scatter(front[size], front["test_acc"], s=70, facecolors="none", edgecolors="black", linewidths=1.2,
                   label="Pareto front")
        ax.step(front[size], front["test_acc"], where="post", color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel(f"{size} (measured at the end of training)")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3, which="both")
    # Beside the axes: with the 11 registered methods a legend inside covers the points (and the front).
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title(title, fontsize=9)
    return fig


def comparison_figures(rows: pd.DataFrame, trials: pd.DataFrame, size: str) -> dict[str, Figure]:
    """Per dataset: `accuracy_vs_budget_<dataset>.png` (from `rows`: dataset, budget, method, test_acc) and
    `pareto_<dataset>.png` (from `trials`: dataset, method, test_acc and the `size` column)."""
    figs: dict[str, Figure] = {}
    for ds in sorted(set(rows["dataset"].dropna()) | set(trials["dataset"].dropna())):
        name = dataset_label(ds)
        r, t = rows[rows["dataset"] == ds], trials[trials["dataset"] == ds]
        if not r.dropna(subset=["test_acc"]).empty:
            figs[f"accuracy_vs_budget_{name}.png"] = accuracy_vs_budget_figure(
                r, f"test accuracy vs {size} budget, {name}")
        if not t.dropna(subset=[size, "test_acc"]).empty:
            figs[f"pareto_{name}.png"] = pareto_figure(t, size, f"every trial, {name}: test accuracy vs {size}")
    return figs
