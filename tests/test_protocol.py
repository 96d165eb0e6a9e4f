"""Paper protocol schema (workflows/protocol.py): every shipped file loads; each kind of malformed file gives a
one-line error naming the file, the experiment and the key; `sparsebench reproduce` exits 2 on it."""
from __future__ import annotations

import re
import textwrap

import pytest

from sparsebench.workflows.cli import main
from sparsebench.workflows.protocol import ProtocolError, list_papers, load_paper

GOOD = """\
paper: toy
title: A toy paper
arxiv: "2101.00001"
experiments:
  - name: widths
    dataset: digits
    epochs: 2
    seeds: 2
    metric: test_acc
    sweep:
      model.hidden: [[8], [16]]
    common: {train.lr: 0.01}
    methods:
      dense: {}
      sparse: {method: fixprob, model.epsilon: 5.0}
    published:
      - {method: dense, at: {model.hidden: [8]}, value: 0.9, tolerance: 0.02, source: paper table 2,
         verified_against_paper: true}
      - {method: sparse, baseline: dense, statistic: relative_accuracy, value: 0.98, source: abstract,
         verified_against_paper: true}
"""


def write(tmp_path, text: str, name: str = "toy"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize("name", list_papers())
def test_every_shipped_protocol_loads(name):
    paper = load_paper(name)
    assert paper.id == name and paper.experiments
    for exp in paper.experiments:
        cells = exp.cells(paper.id)
        assert len(cells) == len(exp.datasets) * (len(exp.sweep_values) or 1) * len(exp.arms) * exp.seeds


def test_a_good_file_expands_into_cells(tmp_path):
    paper = load_paper(write(tmp_path, GOOD))
    (exp,) = paper.experiments
    cells = exp.cells(paper.id)
    assert len(cells) == 2 * 2 * 2
    c = next(c for c in cells if c.arm == "sparse" and c.sweep == [16] and c.seed == 1)
    cfg = c.config()
    assert (cfg.method, cfg.model.hidden, cfg.model.epsilon, cfg.train.seed, cfg.train.lr) == ("fixprob", (16,), 5.0, 1, 0.01)
    assert exp.published[0].at == {"model.hidden": [8]} and exp.published[1].baseline == "dense"


@pytest.mark.parametrize("old, new, message", [
    ("source: paper table 2,", "", "published cell 1: missing source"),
    ("source: paper table 2", "source: a blog post", "source: 'a blog post' is not one of: abstract, paper table N"),
    ("sparse: {method: fixprob", "sparse: {method: fixprobb", "arm sparse: unknown method 'fixprobb'"),
    ("dataset: digits", "dataset: cifar100", "unknown dataset 'cifar100'"),
    ("value: 0.9,", "value: 90.0,", "value: 90.0 is outside [0, 1] for test_acc"),
    ("value: 0.9,", "", "missing value"),
    ("value: 0.9,", "value: high,", "value: 'high' is not a number"),
    ("      - {method: sparse, baseline: dense,", "      - {method: sparse,", "statistic relative_accuracy needs a baseline arm"),
    ("method: dense, at", "method: desne, at", "method: 'desne' is not an arm of the experiment"),
    ("at: {model.hidden: [8]}", "at: {model.hidden: [9]}", "at: model.hidden=[9] is not a swept value"),
    ("at: {model.hidden: [8]}", "at: {train.lr: 0.01}", "at: 'train.lr' is not the experiment's swept setting"),
    ("at: {model.hidden: [8]}", "at: {percent: 50}", "at: percent 50 is not in arm dense's train.prune_curve []"),
    ("verified_against_paper: true}\n      - {method: sparse", "verified_against_paper: maybe}\n      - {method: sparse",
     "verified_against_paper: missing or not true/false"),
    ("statistic: relative_accuracy", "statistic: median", "statistic: unknown 'median'"),
    ("tolerance: 0.02", "tolerance: -1", "tolerance: -1 must be a number >= 0"),
    ("seeds: 2", "seeds: 0", "seeds: 0 must be an integer >= 1"),
    ("metric: test_acc", "metric: f1", "metric: unknown 'f1'"),
    ("common: {train.lr: 0.01}", "common: {train.lr: -1}", "arm dense at model.hidden=[8]: train.lr=-1"),
    ("common: {train.lr: 0.01}", "common: {train.lrate: 0.01}", "unknown key train.lrate"),
    ("arxiv: \"2101.00001\"", "arxiv: 2101.1", "arxiv: 2101.1 is not an arXiv id"),
    ("paper: toy", "paper: other", "paper: 'other' must equal the file name 'toy'"),
    ("    epochs: 2\n", "", "missing key 'epochs'"),
    ("    metric: test_acc\n", "    metric: test_acc\n    colour: red\n", "unknown key 'colour'"),
    ("sweep:\n      model.hidden: [[8], [16]]", "sweep:\n      model.hidden: []", "sweep: model.hidden needs a non-empty list"),
    ("sweep:\n      model.hidden: [[8], [16]]", "sweep:\n      model.hidden: [[8], [8]]", "sweep: model.hidden repeats a value"),
    ("sweep:\n      model.hidden: [[8], [16]]", "sweep:\n      train.seed: [0, 1]", "sweep: train.seed is set by the experiment"),
    ("common: {train.lr: 0.01}", "common: {train.seed: 3}", "arm dense: train.seed is set by the experiment itself"),
    ("dense: {}", "dense: {data.dataset: iris}", "arm dense: data.dataset is set by the experiment itself"),
    ("dense: {}", "dense: fast", "arm dense: expected a mapping of flat config keys"),
    ("common: {train.lr: 0.01}", "common: [train.lr]", "common: expected a mapping"),
    ("dataset: digits", "datasets: []", "datasets: expected a non-empty list"),
    ("at: {model.hidden: [8]}, value: 0.9", "at: {model.hidden: [8]}, baseline: sparse, value: 0.9",
     "baseline: only the relative statistics"),
    ("baseline: dense, statistic: relative_accuracy", "baseline: sparse, statistic: relative_accuracy",
     "baseline: 'sparse' is the cell's own arm"),
    ("baseline: dense, statistic: relative_accuracy, value: 0.98", "baseline: dense, statistic: relative_gain_epochs_1_5, value: 0.4",
     "relative_gain_epochs_1_5 needs epochs >= 5, the experiment has 2"),
    ("source: paper table 2", "source: \"authors' repository o/r results.pk\"", "is not one of: abstract"),
    ("at: {model.hidden: [8]}", "at: [8]", "at: [8] is not a mapping"),
    ("tolerance: 0.02,", "tolerance: 0.02, std: lots,", "std: 'lots' must be a number >= 0"),
    ("    seeds: 2\n", "    seeds: 2\n    gpu_hours: -1\n", "gpu_hours: -1 must be a number > 0"),
    ("    seeds: 2\n", "    seeds: 2\n    gpu_hours: 3\n", "gpu_hours: give gpu_hours_source"),
])
def test_each_malformed_file_gives_a_clear_error(tmp_path, old, new, message):
    assert old in GOOD, old
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ProtocolError, match=re.escape(message)) as err:
        load_paper(path)
    text = str(err.value)
    assert "\n" not in text and text.startswith(str(path))


def test_duplicate_experiment_names_and_bad_yaml(tmp_path):
    doc = GOOD + GOOD[GOOD.index("  - name: widths"):]
    with pytest.raises(ProtocolError, match="experiment name 'widths' is used twice"):
        load_paper(write(tmp_path, doc))
    with pytest.raises(ProtocolError, match="not valid YAML"):
        load_paper(write(tmp_path, "paper: [unclosed"))
    with pytest.raises(ProtocolError, match="unknown paper 'nope'; available: baselines"):
        load_paper("nope")


def test_reproduce_exits_2_on_a_malformed_protocol_before_starting_anything(tmp_path, capsys, in_tmp_cwd):
    bad = write(tmp_path, GOOD.replace("value: 0.9,", "value: 90.0,"))
    assert main(["reproduce", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sparsebench: error:") and "outside [0, 1]" in err and "\n" not in err
    assert not (in_tmp_cwd / "mlflow.db").exists() and not (in_tmp_cwd / "ray_results").exists()
    assert main(["reproduce", "baselines", "--experiment", "nope"]) == 2
    assert "unknown experiment 'nope'; available: dense_digits" in capsys.readouterr().err


def test_plan_shrinks_quick_cells_and_filters_datasets(in_tmp_cwd):
    from sparsebench.workflows.reproduce import QUICK_EPOCHS, ReproduceSettings, plan

    p = plan(ReproduceSettings(paper="baselines", experiments=("dense_digits", "dense_uci"), datasets=("digits", "iris"),
                               quick=True))
    assert [e.name for e in p.experiments] == ["dense_digits", "dense_uci"]
    # The table and completeness cover the whole experiment; only the selected datasets run.
    assert len(p.experiments[1].datasets) == 6 and {c.dataset for c in p.run["dense_uci"]} == {"iris"}
    assert len(p.cells["dense_uci"]) == 6 * 2
    cells = p.cells["dense_digits"]
    assert len(cells) == 3 * 2                        # 3 widths x min(5, 2) seeds
    cfg = cells[0].config()
    assert (cfg.train.epochs, cfg.data.max_train, cfg.data.max_test) == (QUICK_EPOCHS, 1000, 1000)
    full = plan(ReproduceSettings(paper="baselines", experiments=("dense_digits",), seeds=4))
    assert len(full.cells["dense_digits"]) == 3 * 4 and full.cells["dense_digits"][0].config().train.epochs == 30
    assert cells[0].config().hash() != full.cells["dense_digits"][0].config().hash()   # quick runs never pass as full
    with pytest.raises(ProtocolError, match="no selected experiment uses mnist"):
        plan(ReproduceSettings(paper="baselines", experiments=("dense_digits",), datasets=("mnist",)))


def test_quick_refuses_a_protocol_it_cannot_shrink(in_tmp_cwd, shared_datasets, monkeypatch):
    """set_neuron prunes from epoch 10: two quick epochs make its config impossible, which is said up front."""
    from sparsebench.workflows.reproduce import ReproduceSettings, plan

    monkeypatch.setenv("SPARSEBENCH_DATA", str(shared_datasets))
    with pytest.raises(ProtocolError, match="arm set_neuron_target: .*--quick shrinks epochs to 2"):
        plan(ReproduceSettings(paper="set_neuron_pruning", experiments=("neuron_pruning_scikit_feature",), quick=True))


def test_cells_that_would_be_one_run_are_refused(tmp_path, in_tmp_cwd):
    """--quick caps max_train at 1000: a sweep over larger subsets collapses, which is said before anything runs."""
    from sparsebench.workflows.reproduce import ReproduceSettings, plan

    doc = GOOD.replace("sweep:\n      model.hidden: [[8], [16]]", "sweep:\n      data.max_train: [1200, 1500]").replace(
        "at: {model.hidden: [8]}", "at: {data.max_train: 1200}")
    path = write(tmp_path, doc)
    assert len(plan(ReproduceSettings(paper=str(path))).cells["widths"]) == 8
    with pytest.raises(ProtocolError, match="have the same config once --quick shrinks them"):
        plan(ReproduceSettings(paper=str(path), quick=True))


def test_list_reports_a_broken_file_and_goes_on(tmp_path, monkeypatch):
    import sparsebench.workflows.protocol as protocol
    from sparsebench.workflows.reproduce import list_protocols

    write(tmp_path, GOOD)
    write(tmp_path, GOOD.replace("paper: toy", "paper: broken").replace("value: 0.9,", "value: 9,"), name="broken")
    monkeypatch.setattr(protocol, "PAPERS_DIR", tmp_path)
    monkeypatch.setattr(protocol.load_paper, "__defaults__", (tmp_path,))
    monkeypatch.setattr(protocol.list_papers, "__defaults__", (tmp_path,))
    text = list_protocols()
    assert "broken: INVALID:" in text and "outside [0, 1]" in text
    assert "toy: A toy paper (arXiv 2101.00001)" in text and "widths: digits; 2 arm(s) x 2 setting(s) x 2 seeds" in text
