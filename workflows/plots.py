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
