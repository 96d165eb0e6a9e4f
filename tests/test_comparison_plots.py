"""The budget comparison's figures (issue 16): the Pareto front is exactly the non-dominated set, and the figures
are written as valid PNGs; pure functions of DataFrames, no Ray, no MLflow."""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from PIL import Image

from sparsebench.workflows.plots import accuracy_vs_budget_figure, comparison_figures, pareto_figure, pareto_front

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def non_dominated(df: pd.DataFrame, size: str) -> set:
    """The definition, by brute force: no other row at least as good in both and strictly better in one."""
    out = set()
    for i, a in df.iterrows():
        if not any(b[size] <= a[size] and b["test_acc"] >= a["test_acc"]
                   and (b[size] < a[size] or b["test_acc"] > a["test_acc"]) for j, b in df.iterrows() if j != i):
            out.add(i)
    return out


def test_pareto_front_of_a_constructed_frame():
    df = pd.DataFrame({"params_trainable": [100, 200, 200, 300, 400, 400, 50, 300],
                       "test_acc":         [0.5, 0.7, 0.6, 0.7, 0.9, 0.9, 0.4, 0.95]},
                      index=list("abcdefgh"))
    front = pareto_front(df, "params_trainable")
    # g (smallest), a, b (better than a), h (best so far at 300); c is under b, d ties b's accuracy at a larger size,
    # e and f (equal points, both kept) are worse than h at a larger size.
    assert set(df.index[front]) == {"g", "a", "b", "h"} == non_dominated(df, "params_trainable")


def test_pareto_front_equals_the_definition_on_random_frames():
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 40):
        # few distinct values, so ties in size and in accuracy happen often
        df = pd.DataFrame({"weights_nonzero": rng.integers(1, 6, n) * 1000, "test_acc": rng.integers(0, 5, n) / 4})
        assert set(df.index[pareto_front(df, "weights_nonzero")]) == non_dominated(df, "weights_nonzero")


def rows_and_trials():
    rows = pd.DataFrame([{"dataset": "digits", "budget": b, "method": m, "test_acc": 0.8 + 0.01 * s + (b / 1e5)}
                         for m, b, s in itertools.product(("dense", "set"), (2000.0, 8000.0), range(3))])
    trials = pd.DataFrame({"dataset": "digits", "method": ["dense", "dense", "set", "set"],
                           "test_acc": [0.8, 0.9, 0.85, 0.7], "params_trainable": [2000, 8100, 1990, 7900]})
    return rows, trials


def test_comparison_figures_are_valid_pngs(tmp_path):
    rows, trials = rows_and_trials()
    figs = comparison_figures(rows, trials, "params_trainable")
    assert sorted(figs) == ["accuracy_vs_budget_digits.png", "pareto_digits.png"]
    for name, fig in figs.items():
        fig.savefig(tmp_path / name, dpi=60)
        assert (tmp_path / name).read_bytes()[:8] == PNG_SIGNATURE
        with Image.open(tmp_path / name) as im:
            im.verify()
    ax = figs["accuracy_vs_budget_digits.png"].axes[0]
    assert ax.get_xscale() == "log" and [t.get_text() for t in ax.get_legend().get_texts()] == ["dense", "set"]


def test_figures_draw_the_seed_spread_and_the_front():
    rows, trials = rows_and_trials()
    ax = accuracy_vs_budget_figure(rows, "t").axes[0]
    # one error-bar container per method, its bars the seeds' std (ddof=1) = 0.01 at each budget
    bars = [c for c in ax.containers]
    assert len(bars) == 2
    segs = bars[0].lines[2][0].get_segments()
    assert np.allclose([s[1][1] - s[0][1] for s in segs], 2 * 0.01)
    ax = pareto_figure(trials, "params_trainable", "t").axes[0]
    ringed = ax.collections[-1].get_offsets()   # the front, drawn last
    assert sorted(map(tuple, np.asarray(ringed))) == [(1990.0, 0.85), (8100.0, 0.9)]


def test_every_method_of_a_figure_has_its_own_colour_and_marker():
    from sparsebench.workflows.plots import style

    looks = [tuple(sorted(style(i).items())) for i in range(40)]
    assert len(set(looks)) == 40


def test_the_front_leaves_out_trials_stopped_before_their_network_reached_its_size():
    """comparison.deployed_sizes: a spectral_filter trial ASHA stopped in its eigenvalue-only phase (266 trainable
    parameters, no budget_feasible record) is not a point of the front; judged trials, feasible or not, are, and so
    is every trial of a search without budgets."""
    from sparsebench.workflows.comparison import deployed_sizes

    trials = pd.DataFrame({
        "method": ["spectral_filter", "spectral_filter", "dense", "set_neuron", "dense"],
        "budget": [2000.0, 2000.0, 2000.0, 2000.0, None],
        "budget_feasible": [None, 1.0, 1.0, 0.0, None],
        "params_trainable": [266, 2014, 2027, 2280, 700], "test_acc": [0.5, 0.9, 0.93, 0.94, 0.8]})
    kept = deployed_sizes(trials)
    assert list(kept.index) == [1, 2, 3, 4]
    assert 0 not in kept.index[pareto_front(kept, "params_trainable")]
    assert deployed_sizes(trials.drop(columns="budget_feasible")).equals(trials.drop(columns="budget_feasible"))
