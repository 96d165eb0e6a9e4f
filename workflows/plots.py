"""Figures logged to MLflow (matplotlib's object API, no pyplot: no global state, no GUI backend on a worker)."""
from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure


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
