"""`--objective pareto` (issue 16): one multi-objective Optuna study per method (and budget), val_acc up and the size
down, sampled by seeded TPE, with no early stopping; ASHA's own option is refused with it in one line."""
from __future__ import annotations

import optuna
import pytest
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from sparsebench.workflows.cli import main
from sparsebench.workflows.search import SearchSettings, plan, search_and_schedule, study_name
from sparsebench.workflows.search_space import load_search_space

from .conftest import assert_refused


def space():
    return load_search_space("dense").define_by_run({"method": "dense", "data.dataset": "digits", "train.epochs": 3,
                                                     "train.seed": 0})


@pytest.mark.parametrize("metric", ["params_trainable", "weights_nonzero"])
def test_pareto_searcher_is_a_seeded_two_objective_tpe_study_without_early_stopping(metric):
    s = SearchSettings(methods=("dense",), objective="pareto", budget_metric=metric, seed=7, epochs=3)
    searcher, scheduler = search_and_schedule(space(), "study-x", s)
    assert searcher.metric == ["val_acc", metric] and searcher.mode == ["max", "min"]
    assert isinstance(searcher._sampler, optuna.samplers.TPESampler)
    assert type(scheduler) is FIFOScheduler            # no trial is stopped early
    searcher._setup_study(searcher.mode)                # what Tune does when the search starts
    assert searcher._ot_study.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]
    # seeded: the same first configuration in two searchers
    again, _ = search_and_schedule(space(), "study-x", s)
    again._setup_study(again.mode)
    assert searcher.suggest("t1") == again.suggest("t1")


def test_single_objective_keeps_tpe_on_val_acc_with_asha():
    searcher, scheduler = search_and_schedule(space(), "study-y", SearchSettings(methods=("dense",), epochs=3, grace_period=2))
    assert (searcher.metric, searcher.mode) == ("val_acc", "max")
    assert isinstance(scheduler, ASHAScheduler) and (scheduler._metric, scheduler._mode) == ("val_acc", "max")


def test_pareto_studies_have_names_of_their_own(in_tmp_cwd):
    one = plan(SearchSettings(methods=("dense",), budgets=(2000,)))
    two = plan(SearchSettings(methods=("dense",), budgets=(2000,), objective="pareto"))
    assert one[0].name != two[0].name
    with pytest.raises(ValueError, match="unknown objective 'front'; allowed: val_acc, pareto"):
        plan(SearchSettings(methods=("dense",), objective="front"))


@pytest.mark.parametrize("argv, message", [
    (["--objective", "pareto", "--grace-period", "2"], "--grace-period is ASHA's, and --objective pareto runs no ASHA"),
    (["--objective", "front"], "argument --objective: invalid choice: 'front' (choose from 'val_acc', 'pareto')"),
    (["--objective", "pareto", "--budget-metric", "flops"], "argument --budget-metric: invalid choice: 'flops'"),
])
def test_bad_pareto_input_exits_2_with_one_line(argv, message, capsys, in_tmp_cwd):
    assert_refused(main(["search", "--methods", "dense", *argv]), capsys.readouterr().err, message, in_tmp_cwd)
