"""The reproduction table on hand-made run records: exact means, stds, differences, pairing by seed, unknown
published values, curves and the rendered formats."""
from __future__ import annotations

import math
import textwrap

import pandas as pd
import pytest

from sparsebench.workflows.protocol import load_paper
from sparsebench.workflows.repro_table import COLUMNS, RunRecord, render_table, reproduction_table

PROTOCOL = """\
paper: toy
title: A toy paper
arxiv: "2101.00001"
experiments:
  - name: widths
    dataset: digits
    epochs: 5
    seeds: 3
    metric: test_acc
    sweep:
      model.hidden: [[8], [16]]
    methods:
      dense: {train.prune_curve: [50]}
      sparse: {method: fixprob}
    published:
      - {method: dense, at: {model.hidden: [8]}, value: 0.90, tolerance: 0.02, source: paper table 2,
         verified_against_paper: true}
      - {method: sparse, baseline: dense, statistic: relative_accuracy, at: {model.hidden: [8]}, value: 0.98,
         tolerance: 0.01, source: abstract, verified_against_paper: true}
      - {method: dense, statistic: max, at: {model.hidden: [8]}, value: 0.95, source: paper figure 3,
         verified_against_paper: false}
      - {method: dense, at: {model.hidden: [16], percent: 50}, value: 0.5, tolerance: 0.1,
         source: "authors' repository o/r results.pk abc123", verified_against_paper: false}
      - {method: sparse, at: {model.hidden: [16]}, value: null, source: abstract, verified_against_paper: true,
         claim: "competitive"}
"""


@pytest.fixture
def exp(tmp_path):
    path = tmp_path / "toy.yaml"
    path.write_text(textwrap.dedent(PROTOCOL))
    return load_paper(path).experiments[0]


def rec(arm, hidden, seed, acc, hist=None, curve=None, params=100.0, sparsity=0.0):
    return RunRecord("widths", "digits", f"[{hidden}]", arm, "dense" if arm == "dense" else "fixprob", seed,
                     f"h{arm}{hidden}", {"test_acc": acc, "params_trainable": params, "weight_sparsity": sparsity},
                     {"test_acc": hist or []}, curve or {})


def records():
    return [
        rec("dense", 8, 0, 0.90, hist=[0.5, 0.96, 0.90]), rec("dense", 8, 1, 0.92, hist=[0.6, 0.94, 0.92]),
        rec("dense", 8, 2, 0.94, hist=[0.7, 0.95, 0.94]),
        rec("sparse", 8, 0, 0.88, params=40, sparsity=0.6), rec("sparse", 8, 1, 0.89, params=40, sparsity=0.6),
        rec("dense", 16, 0, 0.95, curve={50: {"test_acc": 0.40}}), rec("dense", 16, 1, 0.96, curve={50: {"test_acc": 0.50}}),
        rec("sparse", 16, 0, 0.93, params=60),
    ]


def row(df, setting, arm, quantity):
    hit = df[(df.setting == f"model.hidden={setting}") & (df.arm == arm) & (df.quantity == quantity)]
    assert len(hit) == 1, (setting, arm, quantity, df[["setting", "arm", "quantity"]])
    return hit.iloc[0]


def test_exact_means_stds_differences_and_flags(exp):
    df = reproduction_table(exp, records())
    assert list(df.columns) == COLUMNS
    r = row(df, "[8]", "dense", "test_acc")
    assert r.measured == pytest.approx(0.92) and r["std"] == pytest.approx(0.02) and r.n == 3
    assert r.published == 0.90 and r.difference == pytest.approx(0.02) and bool(r.within) is True
    assert r.source.startswith("paper table 2 (verified against the paper)") and r.setting_hash == "hdense8"
    # Paired by seed: seeds 0 and 1 only (the sparse arm has no seed 2): mean of 0.88/0.90 and 0.89/0.92.
    r = row(df, "[8]", "sparse", "test_acc / dense")
    expected = [0.88 / 0.90, 0.89 / 0.92]
    assert r.measured == pytest.approx(sum(expected) / 2) and r.n == 2
    assert r["std"] == pytest.approx(math.sqrt(sum((v - sum(expected) / 2) ** 2 for v in expected)))
    assert bool(r.within) is (abs(sum(expected) / 2 - 0.98) <= 0.01)
    assert r.params_trainable == 40 and r.weight_sparsity == pytest.approx(0.6)
    # max over epochs, no tolerance: no within flag.
    r = row(df, "[8]", "dense", "max test_acc over epochs")
    assert r.measured == pytest.approx((0.96 + 0.94 + 0.95) / 3) and pd.isna(r.within)
    # A point of the pruning curve.
    r = row(df, "[16]", "dense", "test_acc at 50% nodes removed")
    assert r.measured == pytest.approx(0.45) and r.difference == pytest.approx(-0.05) and bool(r.within) is True
    # Unknown published value: None, no difference; an arm/setting with no cell at all says so.
    r = row(df, "[16]", "sparse", "test_acc")
    assert pd.isna(r.published) and pd.isna(r.difference) and r.n == 1 and "claim: competitive" in r.source
    assert row(df, "[16]", "dense", "test_acc").source == "none published"


def test_missing_runs_show_as_not_measured(exp):
    df = reproduction_table(exp, [r for r in records() if r.arm != "sparse"])
    r = row(df, "[8]", "sparse", "test_acc")
    assert r.n == 0 and pd.isna(r.measured) and pd.isna(r.within)


def test_rendered_formats_never_show_unknown_as_zero(exp):
    df = reproduction_table(exp, records())
    md = render_table(df, "markdown")
    cells = [[c.strip() for c in l.split("|")[1:-1]] for l in md.splitlines()[2:]]
    (line,) = [c for c in cells if c[2] == "model.hidden=[16]" and c[3] == "sparse" and c[5] == "test_acc"]
    assert line[6] == "unknown" and line[7] == "0.9300"        # one seed: no spread shown
    (line,) = [c for c in cells if c[2] == "model.hidden=[16]" and c[3] == "dense" and c[5] == "test_acc"]
    assert line[6] == "none"                                     # nothing published for this row
    assert not any(c[6] in ("0", "0.0000") for c in cells)
    assert [c[10] for c in cells].count("yes") == 3 and any(c[9] == "+0.0200" for c in cells)
    assert not any(c[9] == "-0.0000" for c in cells)
    csv = render_table(df, "csv").splitlines()
    assert csv[0] == ",".join(COLUMNS)
    assert "\\begin{tabular}" in render_table(df, "latex") and "<table" in render_table(df, "html")
    with pytest.raises(ValueError, match="unknown format 'pdf'"):
        render_table(df, "pdf")


def test_non_finite_seeds_are_left_out(exp):
    recs = records()
    recs[1].metrics["test_acc"] = float("nan")         # dense [8] seed 1 diverged
    df = reproduction_table(exp, recs)
    r = row(df, "[8]", "dense", "test_acc")
    assert r.n == 2 and r.measured == pytest.approx(0.92) and bool(r.within) is True
    r = row(df, "[8]", "sparse", "test_acc / dense")   # seed 1 has no baseline value now: only seed 0 pairs
    assert r.n == 1 and r.measured == pytest.approx(0.88 / 0.90) and pd.isna(r["std"])


def test_read_records_keeps_the_newest_run_of_each_planned_cell(exp, tmp_path):
    """Runs of cells the plan no longer has (an edited protocol) and older runs of a cell never reach the table."""
    import time

    from sparsebench.workflows import tracking
    from sparsebench.workflows.reproduce import TAG_CELL, read_records

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    c = tracking.client(uri)
    exp_id = tracking.get_or_create_experiment(c, "reproduce/toy")
    parent = tracking.start_parent_run(c, exp_id, "s", "widths", tags={}, params={})

    def child(key, acc, seed=0):
        run = c.create_run(exp_id, tags={tracking.PARENT_TAG: parent, "stage": "final", TAG_CELL: key, "dataset": "digits",
                                         "method": "dense", "cell.experiment": "widths", "cell.arm": "dense",
                                         "cell.sweep": "[8]", "cell.seed": str(seed), "cell.setting_hash": key[-4:]})
        c.log_metric(run.info.run_id, "test_acc", acc)
        c.set_terminated(run.info.run_id, "FINISHED")
        time.sleep(0.01)   # distinct start times

    child("widths|dense|old0", 0.50)            # the protocol has changed since: not planned
    child("widths|dense|new0", 0.80)            # a first run of a planned cell...
    child("widths|dense|new0", 0.90)            # ...and its rerun: the newest counts
    child("widths|dense|new1", 0.91, seed=1)
    recs = read_records(uri, "toy", exp, parent, {"widths|dense|new0", "widths|dense|new1"})
    assert sorted((r.seed, r.metrics["test_acc"]) for r in recs) == [(0, 0.90), (1, 0.91)]
