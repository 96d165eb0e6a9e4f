"""Budgets in a paper protocol (issue 16): `budgets:` is an experiment's swept setting, every arm's cells sized to each
budget in closed form when the plan knows the data's shapes; every bad budget is one line naming the file and key."""
from __future__ import annotations

import re

import pytest

from sparsebench.methods import get_method
from sparsebench.workflows.cli import main
from sparsebench.workflows.protocol import BUDGET_KEY, ProtocolError, load_paper
from sparsebench.workflows.reproduce import ReproduceSettings, plan

from .conftest import assert_refused
from .test_protocol import write

BUDGETS = """\
paper: toy
title: A toy paper
arxiv: "2101.00001"
experiments:
  - name: equal_size
    dataset: digits
    epochs: 2
    seeds: 2
    metric: test_acc
    budgets: [2k, 8000]
    budget_metric: params_trainable
    common: {train.lr: 0.01}
    methods:
      dense: {model.hidden: [32, 32]}
      set: {}
      spectral_sparse: {}
    published:
      - {method: set, at: {budget: 2000}, value: 0.9, source: paper table 2, verified_against_paper: true}
"""


def test_budget_protocol_loads_as_a_sweep_over_budgets(tmp_path):
    (exp,) = load_paper(write(tmp_path, BUDGETS)).experiments
    assert (exp.sweep_key, exp.budgets, exp.budget_metric) == (BUDGET_KEY, (2000.0, 8000.0), "params_trainable")
    assert exp.published[0].at == {"budget": 2000}
    cells = exp.cells("toy")
    assert len(cells) == 2 * 3 * 2 and BUDGET_KEY not in cells[0].flat   # the budget is no config key


def test_plan_sizes_every_cell_to_its_budget_in_closed_form(tmp_path, in_tmp_cwd):
    p = plan(ReproduceSettings(paper=str(write(tmp_path, BUDGETS))))
    cells = p.cells["equal_size"]
    from sparsebench.methods import load_dataset
    info = load_dataset(cells[0].config().data, "cpu").info
    for c in cells:
        size = get_method(c.config().method).deployed_size(c.config(), info, "params_trainable")
        assert abs(size - c.sweep) <= 0.05 * c.sweep, (c.arm, c.sweep, size)
    dense = [c.config().model.hidden for c in cells if c.arm == "dense" and c.seed == 0]
    assert [len(h) for h in dense] == [2, 2] and dense[0] < dense[1]   # depth kept, widths grown with the budget
    assert len({c.config().hash() for c in cells}) == len(cells)


@pytest.mark.parametrize("old, new, message", [
    ("budgets: [2k, 8000]", "budgets: [0]", "budgets: budget 0: must be a finite number > 0"),
    ("budgets: [2k, 8000]", "budgets: [-5]", "budgets: budget -5: must be a finite number > 0"),
    ("budgets: [2k, 8000]", "budgets: [abc]", "budgets: --budgets: 'abc' is not a budget"),
    ("budgets: [2k, 8000]", "budgets: []", "budgets: expected a non-empty list"),
    ("budgets: [2k, 8000]", "budgets: 2k", "budgets: expected a non-empty list"),
    ("budgets: [2k, 8000]", "budgets: [2k, 2000]", "budgets: budget 2000 is given twice"),
    ("budgets: [2k, 8000]", "budgets: ['2k,8k']", "budgets: '2k,8k' is more than one budget"),
    ("budgets: [2k, 8000]", "budgets: [true]", "budgets: budget True: must be a finite number > 0"),
    ("budget_metric: params_trainable", "budget_metric: flops", "budget_metric: unknown 'flops'; allowed: params_trainable, weights_nonzero, flops_inference"),
    ("    budgets: [2k, 8000]\n", "", "budget_metric: give budgets with it"),
    ("    budgets: [2k, 8000]\n", "    budgets: [2k]\n    sweep: {model.hidden: [[8]]}\n", "budgets: give either a sweep or budgets"),
    ("    budgets: [2k, 8000]\n    budget_metric: params_trainable\n", "    sweep: {budget: [2000]}\n",
     "sweep: 'budget' is not a config key; give budgets: [...]"),
    ("at: {budget: 2000}", "at: {budget: 4000}", "at: budget=4000 is not a swept value"),
])
def test_each_bad_budget_in_a_protocol_is_one_line(tmp_path, old, new, message):
    assert old in BUDGETS, old
    path = write(tmp_path, BUDGETS.replace(old, new, 1))
    with pytest.raises(ProtocolError, match=re.escape(message)) as err:
        load_paper(path)
    assert "\n" not in str(err.value) and str(err.value).startswith(str(path))


@pytest.mark.parametrize("budgets, message", [
    ("[600, 2000]", "arm dense at budget 600 params_trainable: budget 600 params_trainable is below the output layer alone "
              "on digits (64 inputs x 10 classes = 650)"),
])
def test_reproduce_refuses_a_budget_no_arm_can_reach_before_anything(tmp_path_factory, capsys, in_tmp_cwd, budgets,
                                                                    message):
    path = write(tmp_path_factory.mktemp("protocol"), BUDGETS.replace("budgets: [2k, 8000]", f"budgets: {budgets}"))
    assert_refused(main(["reproduce", str(path)]), capsys.readouterr().err, message, in_tmp_cwd)


def test_paper_b_compares_its_arms_at_equal_nonzero_weights(shared_datasets, monkeypatch, in_tmp_cwd):
    """workflows/papers/set_neuron_pruning.yaml, equal_budget_scikit_feature: dense, set and set_neuron sized to the
    same deployed nonzero weights on each scikit-feature set (closed form, within 5%)."""
    from sparsebench.methods import load_dataset
    monkeypatch.setenv("SPARSEBENCH_DATA", str(shared_datasets))
    p = plan(ReproduceSettings(paper="set_neuron_pruning", experiments=("equal_budget_scikit_feature",)))
    cells = p.cells["equal_budget_scikit_feature"]
    assert {(c.arm, c.sweep) for c in cells} == {(a, b) for a in ("dense", "set", "set_neuron_target")
                                                 for b in (40000.0, 160000.0)}
    infos = {}
    for c in cells:
        cfg = c.config()
        info = infos.setdefault(cfg.data.dataset, load_dataset(cfg.data, "cpu").info)
        size = get_method(cfg.method).deployed_size(cfg, info, "weights_nonzero")
        assert abs(size - c.sweep) <= 0.05 * c.sweep, (cfg.data.dataset, c.arm, c.sweep, size)
    assert sorted(infos) == ["coil20", "isolet", "madelon"]
