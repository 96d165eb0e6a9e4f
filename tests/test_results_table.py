"""The paper results table (workflows/results_table.py): the verdict rule, the rows built from run records, the
CSV -> Markdown rendering, and every committed results/<paper>/table.md re-rendered from its CSV byte for byte."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from sparsebench.workflows.protocol import load_paper
from sparsebench.workflows.repro_table import RunRecord
from sparsebench.workflows.results_table import (RESULT_COLUMNS, experiment_rows, parse_csv, render_markdown, to_csv,
                                                 verdict)

RESULTS = Path(__file__).resolve().parents[1] / "results"

PROTOCOL = """\
paper: toy
title: A toy paper
arxiv: "2101.00001"
experiments:
  - name: cpu
    dataset: digits
    epochs: 2
    seeds: 3
    metric: test_acc
    methods:
      dense: {}
      sparse: {method: fixprob}
      other: {method: fixprob, model.epsilon: 5.0}
    published:
      - {method: dense, value: 0.90, tolerance: 0.02, source: paper table 2, verified_against_paper: true}
      - {method: sparse, value: 0.95, tolerance: 0.02, source: paper table 2, verified_against_paper: true}
  - name: mnist
    dataset: mnist
    epochs: 2
    seeds: 2
    metric: test_acc
    gpu_hours: 1.5
    gpu_hours_source: "ours, a guess for the test"
    methods:
      dense: {}
    published:
      - {method: dense, value: 0.99, tolerance: 0.01, source: abstract, verified_against_paper: true}
"""


@pytest.mark.parametrize("args, expected", [
    ((0.90, 0.92, 3, 3, 0.02), "within tolerance"),          # |diff| == tolerance is within
    ((0.90, 0.88, 3, 3, 0.02), "within tolerance"),
    ((0.90, 0.9201, 3, 3, 0.02), "not reproduced"),
    ((0.90, 0.85, 5, 3, 0.02), "not reproduced"),             # more seeds than asked still judge
    ((None, 0.85, 3, 3, 0.02), "no published value"),
    ((0.90, 0.90, 2, 3, 0.02), "incomplete (2 of 3 seeds)"),
    ((0.90, 0.90, 3, 3, None), "no tolerance stated"),
    ((0.90, None, 0, 3, 0.02), "not run"),
    ((None, None, 0, 3, None), "not run"),
])
def test_verdict_rule(args, expected):
    assert verdict(*args) == expected


def test_an_unmeasured_gpu_cell_gives_its_estimate_and_a_measured_one_is_judged():
    assert verdict(0.99, None, 0, 2, 0.01, gpu_hours=3.0) == "needs GPU (est. 3.0 GPU-h)"
    assert verdict(0.99, 0.985, 2, 2, 0.01, gpu_hours=3.0) == "within tolerance"


def rec(exp, arm, seed, acc, wall=10.0, commit="abc1234567", hw="CPU, 16 cores, 1 thread(s)"):
    return RunRecord(exp, "digits", "null", arm, "fixprob", seed, f"h{arm}", {"test_acc": acc, "weight_sparsity": 0.0},
                     commit=commit,
                     hardware=hw, wall_s=wall)


@pytest.fixture
def paper(tmp_path):
    path = tmp_path / "toy.yaml"
    path.write_text(textwrap.dedent(PROTOCOL))
    return load_paper(path)


def rows_of(paper):
    cpu, gpu = paper.experiments
    recs = [rec("cpu", "dense", s, a) for s, a in enumerate((0.90, 0.91, 0.92))]
    recs += [rec("cpu", "sparse", s, a, commit="def7654321" if s else "abc1234567") for s, a in enumerate((0.80, 0.81, 0.82))]
    recs += [rec("cpu", "other", 0, 0.5)]
    return experiment_rows(cpu, recs, cpu.seeds) + experiment_rows(gpu, [], gpu.seeds)


def test_rows_carry_measurements_verdicts_provenance_and_gpu_estimates(paper):
    rows = {(r["experiment"], r["arm"]): r for r in rows_of(paper)}
    dense, sparse, other, gpu = rows["cpu", "dense"], rows["cpu", "sparse"], rows["cpu", "other"], rows["mnist", "dense"]
    assert dense["measured"] == pytest.approx(0.91) and dense["std"] == pytest.approx(0.01) and dense["n"] == 3
    assert dense["difference"] == pytest.approx(0.01) and dense["verdict"] == "within tolerance"
    assert dense["wall_s"] == pytest.approx(30.0) and dense["commit"] == "abc1234567"
    assert dense["source"].startswith("paper table 2 (verified against the paper)")
    assert sparse["verdict"] == "not reproduced" and sparse["difference"] == pytest.approx(-0.14)
    assert sparse["commit"] == "abc1234567; def7654321"        # runs of two commits: both named
    assert other["verdict"] == "no published value" and other["published"] is None and other["n"] == 1
    assert gpu["n"] == 0 and gpu["gpu_hours"] == pytest.approx(3.0) and gpu["verdict"] == "needs GPU (est. 3.0 GPU-h)"


def test_csv_round_trip_and_markdown(paper):
    header = {"title": "A toy paper: published vs measured", "command": "sparsebench reproduce toy --output results/toy",
              "settings": "1 trial(s) at once, 1 CPU and 0 GPU per trial"}
    text = to_csv(rows_of(paper), header)
    df, back = parse_csv(text)
    # A cell's second row (another quantity of the same runs) does not count its runs again in the budget.
    twice = to_csv(rows_of(paper) + [{**rows_of(paper)[0], "quantity": "max test_acc over epochs"}], header)
    assert "7 of 11 runs measured, 70 s" in render_markdown(*parse_csv(twice))
    assert back == header and list(df.columns) == RESULT_COLUMNS and len(df) == 4
    assert to_csv(df.to_dict("records"), back) == text          # the CSV is a fixed point of parse + write
    md = render_markdown(df, back)
    lines = md.splitlines()
    assert lines[0] == "# A toy paper: published vs measured" and lines[4:7] == ["```bash", header["command"], "```"]
    assert "Compute budget: 7 of 11 runs measured, 70 s of run wall time in all; GPU cells not measured: " \
           "3.0 GPU-hours estimated." in md
    assert ("| cpu / digits / dense | test_acc | 0.9000 | paper table 2 (verified against the paper) | "
            "0.9100 ± 0.0100 (3) | +0.0100 | 0.0200 | within tolerance | 0.000 | abc1234567 | CPU, 16 cores, 1 thread(s) | 30 s |") in lines
    assert "| cpu / digits / other | test_acc | none | none published | 0.5000 (1) |  |  | no published value |" in md
    assert lines[-1] == "1 cell(s) not reproduced: the measured analysis of each is in [analysis.md](analysis.md)."
    assert "| mnist / dense | test_acc | 0.9900 | abstract (verified against the paper) |  |  | 0.0100 | " \
           "needs GPU (est. 3.0 GPU-h) |" in md


@pytest.mark.parametrize("csv_path", sorted(RESULTS.glob("*/table.csv")), ids=lambda p: p.parent.name)
def test_committed_results_markdown_is_the_rendering_of_its_csv(csv_path):
    md = csv_path.with_suffix(".md")
    assert md.is_file(), f"{csv_path} has no {md.name}"
    df, header = parse_csv(csv_path.read_text())
    assert header["command"].startswith("sparsebench reproduce ")
    assert render_markdown(df, header) == md.read_text()
    if (df["verdict"] == "not reproduced").any():   # every miss has its written analysis beside the table
        assert (csv_path.parent / "analysis.md").is_file()
