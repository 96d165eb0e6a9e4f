"""`sparsebench search --budgets` (issue 16): bad input stops before anything starts; a tiny budget search sizes
every trial to its cell's budget and records its feasibility; the table has a row per (method, budget)."""
from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from sparsebench.methods import RunConfig
from sparsebench.methods.data import DataInfo
from sparsebench.workflows import tracking
from sparsebench.workflows.budgets import BudgetError, SizedDefineByRun, label, parse_budgets
from sparsebench.workflows.cli import main
from sparsebench.workflows.search import SearchSettings, plan
from sparsebench.workflows.search_space import load_search_space

from .conftest import assert_refused

DENSE = ["search", "--methods", "dense"]
BAD = [
    (DENSE + ["--budgets", "0"], "budget 0.0: must be a finite number > 0"),
    (DENSE + ["--budgets", "-5"], "--budgets: '-5' is not a budget; give positive numbers"),
    (DENSE + ["--budgets", "abc"], "--budgets: 'abc' is not a budget; give positive numbers"),
    (DENSE + ["--budgets", ""], "--budgets '': empty; give positive numbers"),
    (DENSE + ["--budgets", "2k,,8k"], "--budgets: '' is not a budget"),
    (DENSE + ["--budgets", "2k,2000"], "budget 2000 is given twice"),
    # digits: the output layer alone is 64 x 10 weights + 10 biases
    (DENSE + ["--budgets", "600"], "budget 600 params_trainable is below the output layer alone on digits (64 inputs x 10 classes = 650)"),
    (DENSE + ["--budgets", "2k", "--budget-metric", "flops"], "argument --budget-metric: invalid choice: 'flops' (choose from 'params_trainable', 'weights_nonzero', 'flops_inference')"),
]


@pytest.mark.parametrize("argv,message", BAD, ids=lambda a: " ".join(a) if isinstance(a, list) else "")
def test_bad_budget_input_exits_2_with_one_line(argv, message, capsys, in_tmp_cwd):
    code = main(argv)
    assert_refused(code, capsys.readouterr().err, message, in_tmp_cwd)


def test_python_api_checks_budgets_before_anything(in_tmp_cwd):
    for bad, message in (((0,), "budget 0"), ((float("nan"),), "budget nan"), ((), None)):
        s = SearchSettings(methods=("dense",), budgets=bad)
        if message is None:   # no budgets: a plain search plan
            assert [st.budget for st in plan(s)] == [None]
            continue
        with pytest.raises(BudgetError, match=message):
            plan(s)
    with pytest.raises(BudgetError, match="unknown budget metric 'flops'"):
        plan(SearchSettings(methods=("dense",), budgets=(2000,), budget_metric="flops"))


def test_parse_and_label():
    assert parse_budgets("2k, 8000,1.5m") == (2000.0, 8000.0, 1_500_000.0)
    assert [label(b) for b in (2000.0, 1500.0, 2_500_000.0, 32000.0, 650.0)] == ["2k", "1.5k", "2.5m", "32k", "650"]


def test_plan_has_one_cell_per_method_and_budget_and_marks_unreachable(in_tmp_cwd):
    s = SearchSettings(methods=("dense", "spectral"), budgets=(700, 8000), num_samples=3)
    cells = plan(s)
    assert [(c.method, c.budget) for c in cells] == [("dense", 700), ("dense", 8000), ("spectral", 700), ("spectral", 8000)]
    assert len({c.name for c in cells}) == 4
    # dense's smallest 2-layer net on digits is ~85 scalars, so 700 is reachable; the names carry the budget
    assert all(not c.unreachable for c in cells) and cells[1].name.startswith("dense-8k-digits-")


class _Trial:
    """Optuna's suggest API with fixed answers (the first choice, the low end)."""

    def suggest_float(self, key, low, high, log=False, step=None):
        return low

    def suggest_int(self, key, low, high, log=False, step=None):
        return low

    def suggest_categorical(self, key, choices):
        return choices[-1]


@pytest.mark.parametrize("method", ["dense", "set", "lp_sphere", "spectral_sparse"])
def test_sampled_trial_is_sized_to_its_budget(method):
    info = DataInfo("digits", (64,), 10, 1000, 200, 360, "", "test")
    space = load_search_space(method)
    base = {"method": method, "data.dataset": "digits", "train.epochs": 4, "train.seed": 0}
    fn = SizedDefineByRun(space.define_by_run(base), info, 8000.0, "params_trainable")
    trial = _Trial()
    returned = fn(trial)
    sampled = {p.key: p.suggest(trial) for p in space.params}
    cfg = RunConfig.from_flat(space.decode({**sampled, **returned}))   # OptunaSearch's merge: returned keys win
    from sparsebench.methods import get_method
    size = get_method(method).deployed_size(cfg, info, "params_trainable")
    assert abs(size - 8000) <= 0.05 * 8000, (method, size)





@pytest.mark.ray
@pytest.mark.slow
def test_budget_search_sizes_trials_and_tables_per_cell(in_tmp_cwd, ray_session, capsys):
    argv = ["search", "--methods", "dense,set", "--dataset", "digits", "--num-samples", "2", "--epochs", "2",
            "--budgets", "2k,8k", "--max-concurrent", "2", "--seed", "3", "--final-seeds", "2"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    client = MlflowClient(tracking_uri=f"sqlite:///{in_tmp_cwd / 'mlflow.db'}")
    exp = client.get_experiment_by_name("search/digits")
    parents = client.search_runs([exp.experiment_id], filter_string=f"tags.`{tracking.TAG_KIND}` = 'parent'")
    assert sorted((p.data.tags["method"], p.data.tags["budget"]) for p in parents) == [
        ("dense", "2000"), ("dense", "8000"), ("set", "2000"), ("set", "8000")]
    trials = client.search_runs([exp.experiment_id], filter_string=f"tags.`{tracking.TAG_KIND}` = 'trial'")
    assert len(trials) == 8    # the same number of trials in every cell
    for run in trials:
        budget = float(run.data.tags["budget"])
        size = run.data.metrics["params_trainable"]
        assert run.data.metrics["budget_feasible"] == float(abs(size - budget) <= 0.05 * budget)
        assert abs(size - budget) <= 0.05 * budget, (run.data.tags["method"], budget, size)
    table = [line for line in out.splitlines() if line.startswith("| search/digits")]
    assert len(table) == 4 and {line.split("|")[4].strip() for line in table} == {"2000", "8000"}
    # The final stage: each cell's best config over 2 seeds, in the method x budget table (Welch's t-test verdicts)
    cells = [line.split("|") for line in out.splitlines() if line.startswith("| digits ")]
    assert sorted((c[3].strip(), c[2].strip()) for c in cells) == [("dense", "2000"), ("dense", "8000"),
                                                                    ("set", "2000"), ("set", "8000")]
    assert all(c[4].strip().endswith("(2)") for c in cells)
    header = next(line.split("|") for line in out.splitlines() if line.startswith("| dataset "))
    verdict = [h.strip() for h in header].index("verdict")
    assert {c[verdict].strip() for c in cells} <= {"winner", "tie", ""}
    # One comparison run for the command: every study's parent nested under it, the table and the figures its artifacts
    comparisons = client.search_runs([exp.experiment_id], filter_string=f"tags.`{tracking.TAG_KIND}` = 'comparison'")
    assert len(comparisons) == 1 and comparisons[0].info.status == "FINISHED"
    comp = comparisons[0].info.run_id
    assert {p.data.tags[tracking.PARENT_TAG] for p in parents} == {comp}
    artifacts = {a.path for a in client.list_artifacts(comp)}
    assert artifacts == {"budget_table.csv", "budget_table.md", "budget_table.html", "comparison.json",
                         "accuracy_vs_budget_digits.png", "pareto_digits.png"}
    csv = (in_tmp_cwd / client.download_artifacts(comp, "budget_table.csv")).read_text().splitlines()
    assert len(csv) == 5 and csv[0].startswith("dataset,budget,method,test_acc,n,")
    assert all(",2," in line for line in csv[1:])     # n = 2 final seeds in every cell
    for png in ("accuracy_vs_budget_digits.png", "pareto_digits.png"):
        assert Path(client.download_artifacts(comp, png)).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"MLflow comparison run {comp}; figures: " in out
    # `sparsebench table --by budget` rebuilds the same table from MLflow alone (the experiment as first column)
    assert main(["table", "--by", "budget", "--experiment", "search/digits", "--format", "csv"]) == 0
    stored = capsys.readouterr().out.strip().splitlines()
    assert stored[0].startswith("experiment,dataset,budget,method")
    assert [line.split(",", 1)[1] for line in stored] == csv
    assert all(line.startswith("search/digits,") for line in stored[1:])


def test_table_by_budget_without_a_comparison_is_one_line(in_tmp_cwd, capsys):
    from mlflow.tracking import MlflowClient as Client

    Client(tracking_uri=f"sqlite:///{in_tmp_cwd / 'mlflow.db'}").create_experiment("search/digits")
    assert main(["table", "--by", "budget", "--experiment", "search/digits"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--by budget: no budget comparison in experiment 'search/digits'" in err
    assert main(["table", "--by", "flops"]) == 2
    assert "argument --by: invalid choice: 'flops' (choose from 'trial', 'budget')" in capsys.readouterr().err


def test_a_study_without_a_feasible_trial_is_a_cell_that_says_why():
    from types import SimpleNamespace as NS

    from sparsebench.workflows.search import no_feasible_trial

    grid = [NS(error=None, metrics={"params_trainable": 8850.0}), NS(error=None, metrics={"params_trainable": 17058.0}),
            NS(error="boom", metrics={"params_trainable": 1.0}), NS(error=None, metrics={})]
    assert no_feasible_trial(grid, 8000.0, "params_trainable") == \
        "no trial within 5% of 8k (measured 8850-17058 params_trainable)"
    assert no_feasible_trial([], 2000.0, "weights_nonzero") == "no trial within 5% of 2k (no trial finished)"


def test_a_pruning_trial_stopped_early_is_judged_by_nothing_it_measured():
    """set_neuron's size falls with every pruning round: a trial ASHA stopped at epoch 2 of 12 measures a network far
    above its budget, which is not the one its configuration deploys (Method.size_changes; search.judged)."""
    from types import SimpleNamespace

    from sparsebench.methods import get_method
    from sparsebench.workflows.search import Study, best_config, judged

    assert get_method("set_neuron").size_changes and not get_method("set").size_changes
    assert not judged({"epoch": 2}, True, 12) and judged({"epoch": 12}, True, 12) and judged({"epoch": 2}, False, 12)
    flat = {"method": "set_neuron", "data.dataset": "digits", "train.epochs": 12, "model.prune_target": 0.5,
            "model.prune_start": 1, "model.prune_every": 2,
            "train.lr": 0.1}

    def trial(epoch, size, val, lr):
        return SimpleNamespace(error=None, config={**flat, "train.lr": lr},
                               metrics={"epoch": epoch, "params_trainable": size, "val_acc": val})

    def best(grid, method="set_neuron"):
        study = Study(method, SimpleNamespace(decode=dict), {**flat, "method": method}, "x", budget=2000.0)
        cfg = best_config(grid, study)
        return cfg and cfg["train.lr"]

    stopped, finished_off = trial(2, 4572, 0.9, 0.01), trial(12, 2280, 0.8, 0.02)
    assert best([stopped, finished_off]) == 0.01            # the stopped one is eligible; the finished one is 14% off
    assert best([finished_off]) is None                     # a full-length trial off its budget never is
    assert best([trial(12, 2050, 0.7, 0.03), stopped]) == 0.01
    with_set = [SimpleNamespace(**{**vars(stopped), "config": {**stopped.config, "method": "set"}})]
    assert best(with_set, "set") is None                    # a fixed-size method is judged at every epoch


def test_the_demo_compares_every_method_at_two_budgets_every_method_reaches_on_digits():
    """Issue 16, item 6: the demo is budget-matched at >= 2 budgets (its wall time is measured in docs/search.md)."""
    from sparsebench.methods import get_method, list_methods, load_dataset
    from sparsebench.workflows.cli import build_parser

    args = build_parser().parse_args(["demo"])
    assert (args.dataset, args.budgets, args.final_seeds, args.num_samples, args.epochs) == ("digits", (2000.0, 8000.0), 3, 4, 12)
    info = load_dataset(RunConfig.from_flat({"method": "dense"}).data, "cpu").info
    for name in list_methods():
        space = load_search_space(name)
        cfg = RunConfig.from_flat({**space.fixed, "method": name, "train.epochs": 12})
        for budget in args.budgets:   # every cell can be sized (no "unreachable" in the demo's table)
            get_method(name).size_to_budget(cfg, info, budget, "params_trainable")
