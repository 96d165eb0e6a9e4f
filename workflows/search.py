"""`sparsebench search`: one Optuna study per method, scheduled by Ray Tune with ASHA, recorded in MLflow.

Each method gets its own study with the same trial budget, so that the comparison is fair (a joint study
where the method is a categorical choice would give the best-looking method most trials). The studies run
one after another on the same Ray cluster, each using all of it.

A study's name is derived from the hash of everything that defines it (method, dataset, epochs, search
space, trials, seed, scheduler, parameter budget), so rerunning the same command finds the same study: its Tune experiment
is restored (finished trials are not rerun) and its MLflow parent run is reopened.

With `budgets` (issue 16, workflows/budgets.py) every (method, budget) is a study of its own with `num_samples`
trials, each sized to its budget in closed form; a budget a method cannot reach is a study that is not run and
shows as "unreachable" in the table.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from sparsebench.methods import ConfigError, RunConfig, get_method
from sparsebench.methods.data import dataset_label, file_digest, list_datasets, load_dataset

from . import budgets as budgeting
from . import comparison as comparing
from . import optuna_store, ray_job, tracking
from .runner import (RunnerSettings, SearchInterrupted, check_resources, check_stores, fit, init_ray, restorable,
                     under_parent)
from .search_space import SearchSpace, load_search_space
from .trial import MlflowTrialCallback

METRIC, MODE = "val_acc", "max"
OBJECTIVES = ("val_acc", "pareto")


@dataclass(frozen=True, kw_only=True)
class SearchSettings(RunnerSettings):
    methods: tuple[str, ...]
    dataset: str = "digits"          # a registered name, or a file / image folder (absolute: Ray workers chdir)
    target: str = ""                 # the label column of a table dataset (default: its last column)
    test_dataset: str = ""           # a file holding the test split (default: a stratified holdout)
    num_samples: int = 8
    epochs: int = 10
    seed: int = 0
    search_space: str = ""           # a file overriding the method's default space (single method only)
    grace_period: int = 1            # ASHA: epochs every trial gets before it may be stopped
    reduction_factor: int = 2
    experiment: str = ""             # MLflow experiment; default search/<dataset>
    budgets: tuple[float, ...] = ()  # parameter budgets (issue 16); empty: each method at its space's own sizes
    budget_metric: str = "params_trainable"   # what a budget counts: params_trainable | weights_nonzero
    objective: str = "val_acc"       # val_acc: one objective, ASHA; pareto: val_acc up and budget_metric down
    optuna_storage: str = ""         # database of the Optuna studies; default beside the MLflow store (optuna_store.py)

    @property
    def optuna_url(self) -> str:
        return optuna_store.resolve(self.optuna_storage, self.uri, self.storage_path)


@dataclass(frozen=True)
class Study:
    method: str
    space: SearchSpace
    base: dict[str, Any]             # flat keys set by the command line
    name: str
    budget: float | None = None      # the cell's parameter budget (None: no budget axis)
    unreachable: str = ""            # why the method cannot reach `budget` (the study is then not run)
    info: Any = None                 # the dataset's DataInfo (shapes), for sizing trials to `budget`


def experiment_name(s: SearchSettings) -> str:
    return s.experiment or f"search/{dataset_label(s.dataset)}"


def data_path(text: str) -> str:
    """A registered name as it is; a file or folder as an absolute path, since Ray Tune runs each trial in a
    working directory of its own, or relative to a Ray job's working dir when it is shipped inside it
    (workflows/ray_job.py: every node has its own copy)."""
    return text if not text or text in list_datasets() else ray_job.driver_path(text)


def data_identity(base: dict[str, Any]) -> dict[str, Any]:
    """`base` with each data file replaced by the sha256 of its content: the same file in another place is the
    same study, a changed file a new one (methods/data/files.py file_digest)."""
    out = dict(base)
    for key in ("data.dataset", "data.test_dataset"):
        if out.get(key) and out[key] not in list_datasets():
            out[key] = "sha256:" + file_digest(out[key])
    return out


def study_name(method: str, space: SearchSpace, base: dict[str, Any], s: SearchSettings, budget: float | None = None) -> str:
    # The MLflow store and experiment are part of the identity: the same search logged elsewhere is another study.
    ident = {"space": space.fingerprint(), "base": data_identity(base), "num_samples": s.num_samples, "seed": s.seed,
             "asha": [s.grace_period, s.reduction_factor], "metric": METRIC,
             "tracking_uri": s.uri, "experiment": experiment_name(s)}
    if budget is not None:   # only then: the names of searches without budgets stay what they were
        ident["budget"] = [budget, s.budget_metric]
    if s.objective != "val_acc":   # likewise
        ident["objective"] = [s.objective, s.budget_metric]
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:12]
    cell = "" if budget is None else f"-{budgeting.label(budget)}"
    return f"{method}{cell}-{dataset_label(base['data.dataset'])}-{digest}"


def plan(s: SearchSettings) -> list[Study]:
    """Validate everything the search needs, before Ray starts: methods, spaces, dataset (loaded once),
    storage and the MLflow store."""
    if s.objective not in OBJECTIVES:
        raise ConfigError(f"unknown objective {s.objective!r}; allowed: {', '.join(OBJECTIVES)}")
    if s.objective == "pareto":
        budgeting.check_metric(s.budget_metric)
    budgets = ()
    if s.budgets:   # the Python API's values checked as the command line's are
        budgeting.check_metric(s.budget_metric)
        budgets = budgeting.check_budgets(s.budgets)
    planned = []
    for method in s.methods:
        space = load_search_space(method, s.search_space or None)
        base = {"method": method, "data.dataset": data_path(s.dataset), "train.epochs": s.epochs, "train.seed": s.seed,
                # only when given, so that the study names of the built-in sets do not change
                **{k: v for k, v in (("data.target", s.target), ("data.test_dataset", data_path(s.test_dataset))) if v}}
        # Every value the command line sets must make a valid config together with the space's fixed values.
        RunConfig.from_flat({**space.fixed, **base})
        planned.append((method, space, base))
    # Loads (downloading on first use) and verifies the data: a missing, corrupt or unusable file fails here,
    # before the study names read a file's digest.
    info = load_dataset(RunConfig.from_flat({**planned[0][1].fixed, **planned[0][2]}).data, "cpu").info
    studies = [Study(method, space, base, study_name(method, space, base, s, budget), budget)
               for method, space, base in planned for budget in budgets or (None,)]
    if budgets:
        budgeting.check_floor(budgets, info, s.budget_metric)
        studies = [_with_reach(st, info, s.budget_metric) for st in studies]
    optuna_store.check(s.optuna_url, given=bool(s.optuna_storage))
    check_stores(s)
    return studies


def _with_reach(study: Study, info, metric: str) -> Study:
    """The study, marked unreachable when the method cannot size its space's default config to the budget."""
    try:
        budgeting.sized_overrides({**study.space.fixed, **study.base}, info, study.budget, metric)
        return dataclasses.replace(study, info=info)
    except budgeting.BudgetError as e:
        return dataclasses.replace(study, info=info, unreachable=str(e))


def run_study(study: Study, s: SearchSettings, echo: bool = True, comparison: str | None = None) -> dict[str, Any]:
    """One method's search (at one budget). Returns {study, method, budget, parent_run_id, experiment, trials,
    errors, best_config}; an unreachable (method, budget) cell runs nothing and says why (`unreachable`). With
    `comparison` (a budget search's comparison run) the study's parent run is nested under it."""
    uri = s.uri
    experiment = experiment_name(s)
    cell = {"study": study.name, "method": study.method, "budget": study.budget, "experiment": experiment}
    if study.unreachable:
        return {**cell, "parent_run_id": None, "trials": 0, "errors": 0, "best_config": None,
                "unreachable": study.unreachable}
    c = tracking.client(uri)
    exp_id = tracking.get_or_create_experiment(c, experiment)
    budget_tags = {} if study.budget is None else {"budget": f"{study.budget:g}", "budget_metric": s.budget_metric}
    parent = tracking.start_parent_run(
        c, exp_id, study.name, run_name=f"{study.method}-{budgeting.label(study.budget)}-search" if study.budget
        else f"{study.method}-search",
        tags={"method": study.method, "dataset": study.base["data.dataset"], "stage": "search", **budget_tags},
        params={**budget_tags, "num_samples": s.num_samples, "epochs": s.epochs, "seed": s.seed, "search_space": study.space.source,
                "space": json.dumps(study.space.fingerprint(), sort_keys=True), "objective": s.objective,
                "scheduler": "fifo" if s.objective == "pareto" else "asha",
                "asha.grace_period": s.grace_period, "asha.reduction_factor": s.reduction_factor,
                "cpus_per_trial": s.cpus_per_trial, "gpus_per_trial": s.gpus_per_trial})
    if comparison:
        comparing.nest(c, comparison, parent)
    grid, killed, statuses = under_parent(c, exp_id, parent, lambda: _fit(study, s, experiment, echo))
    done = statuses["FINISHED"] + statuses["FAILED"]
    tracking.set_tags(c, parent, {"trials": str(done), "trial_errors": str(grid.num_errors)})
    _log_study_table(c, uri, experiment, parent)
    if killed or done < s.num_samples:
        c.set_terminated(parent, status="KILLED")
        raise SearchInterrupted(f"study {study.name} interrupted after {done} of {s.num_samples} trials; "
                                f"run the same command again to resume it")
    c.set_terminated(parent, status="FAILED" if grid.num_errors else "FINISHED")
    out = {**cell, "parent_run_id": parent, "trials": done, "errors": grid.num_errors,
           "best_config": best_config(grid, study, s.budget_metric)}
    if out["best_config"] is None and study.budget is not None:
        # A cell of the table that says why it has no final runs, rather than a method missing from it.
        out["unreachable"] = no_feasible_trial(grid, study.budget, s.budget_metric)
    return out


def no_feasible_trial(grid, budget: float, metric: str) -> str:
    """Why a budget study has no best configuration: the sizes its trials measured, none within 5% of the budget."""
    sizes = sorted(r.metrics[metric] for r in grid if r.error is None and r.metrics and r.metrics.get(metric) is not None)
    seen = f"measured {sizes[0]:g}-{sizes[-1]:g} {metric}" if sizes else "no trial finished"
    return f"no trial within 5% of {budgeting.label(budget)} ({seen})"


def judged(result: dict[str, Any], size_changes: bool, epochs: int) -> bool:
    """Whether a trial's size at this result is the one it deploys: always for a method of fixed size, only after
    the last epoch for one whose size changes in training (Method.size_changes): a pruning method ASHA stopped
    before its last round has not reached its deployed size, and its measured size would call it infeasible. Such a
    trial is then neither feasible nor infeasible by measurement; if it is the best, the final stage trains its
    configuration to the end and measures that."""
    return not size_changes or int(result.get("epoch", 0)) >= epochs


def best_config(grid, study: Study, budget_metric: str = "params_trainable") -> dict[str, Any] | None:
    """The flat config of the finished trial with the best last val_acc (as `best_table` chooses), without its seed;
    with a budget, among the trials whose measured size is within 5% of it, or not judged by it (`judged`)."""
    changes, epochs = get_method(study.method).size_changes, int(study.base["train.epochs"])
    ok = [r for r in grid if r.error is None and r.metrics and METRIC in r.metrics
          and (study.budget is None or not judged(r.metrics, changes, epochs)
               or budgeting.feasible(r.metrics, study.budget, budget_metric))]
    if not ok:
        return None
    # The order best_table uses: val_acc, then fewer trainable parameters, then the earlier trial.
    best = min(ok, key=lambda r: (-r.metrics[METRIC], r.metrics.get("params_trainable", 0), r.metrics.get("trial_id", "")))
    flat = RunConfig.from_flat(study.space.decode(best.config)).without_seed().flat()
    return {k: v for k, v in flat.items() if k != "train.seed"}


def _fit(study: Study, s: SearchSettings, experiment: str, echo: bool):
    decode = study.space.decode
    space = study.space.define_by_run(study.base)
    if study.budget is None:
        callback = MlflowTrialCallback(s.uri, experiment, study.name, stage="search", decode=decode,
                                       tags={"study": study.name}, max_epochs=s.epochs, echo=echo)
    else:
        space = budgeting.SizedDefineByRun(space, study.info, study.budget, s.budget_metric)
        callback = BudgetTrialCallback(s.uri, experiment, study.name, stage="search", decode=decode,
                                       tags={"study": study.name, "budget": f"{study.budget:g}",
                                             "budget_metric": s.budget_metric},
                                       max_epochs=s.epochs, echo=echo)
        callback.budget, callback.budget_metric = study.budget, s.budget_metric
        callback.size_changes = get_method(study.method).size_changes
    # A study of this name in the database without its Tune experiment is stale (optuna_store.py); on a restore
    # Tune brings back the searcher it checkpointed, and this one is not used.
    storage = optuna_store.storage(s.optuna_url, study.name, fresh=not restorable(s, study.name))
    searcher, scheduler = search_and_schedule(space, study.name, s, storage)
    return fit(study.name, s, decode, callback, echo=echo, search_alg=searcher, scheduler=scheduler,
               num_samples=s.num_samples)


def search_and_schedule(space, name: str, s: SearchSettings, storage=None):
    """The Optuna searcher and the Tune scheduler of a study.

    val_acc: TPE on val_acc, ASHA stopping poor trials early on it. pareto: one multi-objective Optuna study,
    maximise val_acc and minimise the size `budget_metric` (OptunaSearch with metric and mode lists), sampled by
    TPE, which handles several objectives (MOTPE: Ozaki et al., GECCO 2020; optuna's TPESampler docs), rather
    than NSGA-II, whose default population of 50 (optuna NSGAIISampler) is more than a whole search's trials here,
    so it would never leave its random first generation. A multi-objective study cannot prune (Ray's OptunaSearch
    reports no intermediate values for a metric list) and ASHA needs one scalar, so in this mode no trial is
    stopped early (FIFO): every point of the front is a network trained for all its epochs. `storage`: the optuna
    storage of the study (optuna_store.storage; None: in memory)."""
    import optuna
    from ray.tune.schedulers import FIFOScheduler

    sampler = optuna.samplers.TPESampler(seed=s.seed)
    if s.objective == "pareto":
        return (OptunaSearch(space=space, metric=[METRIC, s.budget_metric], mode=[MODE, "min"], sampler=sampler,
                             study_name=name, storage=storage), FIFOScheduler())
    return (OptunaSearch(space=space, metric=METRIC, mode=MODE, sampler=sampler, study_name=name, storage=storage),
            ASHAScheduler(time_attr="epoch", metric=METRIC, mode=MODE, max_t=s.epochs,
                          grace_period=min(s.grace_period, s.epochs), reduction_factor=s.reduction_factor))


class BudgetTrialCallback(MlflowTrialCallback):
    """Adds `budget_feasible` (1: the measured size is within 5% of the budget, 0: not) to every result, so the
    run records it each epoch and its last value says whether the trained network met the budget."""

    budget: float
    budget_metric: str
    size_changes: bool = False   # the method's Method.size_changes

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if self.budget_metric in result and judged(result, self.size_changes, self.max_epochs):
            result[budgeting.FEASIBLE_KEY] = float(budgeting.feasible(result, self.budget, self.budget_metric))
        super().on_trial_result(iteration, trials, trial, result, **info)


def _log_study_table(c, uri: str, experiment: str, parent: str) -> None:
    """The study's table (its trials only) as artifacts of its parent run, so the MLflow UI shows it."""
    from .tables import best_table, render, runs_frame

    table = best_table(runs_frame(uri, experiment, parent_run_ids=[parent]))
    for fmt, name in (("markdown", "table.md"), ("csv", "table.csv"), ("html", "table.html")):
        c.log_text(parent, render(table, fmt), name)


def search(s: SearchSettings, studies: list[Study] | None = None, echo: bool = True) -> list[dict[str, Any]]:
    """Run every method's study, one after another; `studies` from `plan(s)` when already validated. With budgets,
    or --objective pareto, the studies are nested under one comparison run (workflows/comparison.py), closed with its table and figures
    from each cell's best trial; `comparison.finish` again with a final stage (the CLI's --final-seeds) replaces
    them by the final seeds'. Each result carries the comparison's run id (`comparison_run_id`)."""
    studies = studies or plan(s)
    init_ray()
    check_resources(s)
    comparison = None
    if s.budgets or s.objective == "pareto":
        c = tracking.client(s.uri)
        comparison = comparing.start(c, tracking.get_or_create_experiment(c, experiment_name(s)), studies, s)
    out = []
    try:
        for study in studies:
            at = "" if study.budget is None else f" at {budgeting.label(study.budget)} {s.budget_metric}"
            if echo and study.unreachable:
                print(f"[{study.method}]{at}: unreachable ({study.unreachable})", flush=True)
            elif echo:
                print(f"[{study.method}] study {study.name}: {s.num_samples} trials x {s.epochs} epochs on "
                      f"{dataset_label(s.dataset)}{at}", flush=True)
            out.append({**run_study(study, s, echo=echo, comparison=comparison), "comparison_run_id": comparison})
    except BaseException:
        if comparison:
            comparing.abort(s.uri, comparison)
        raise
    if comparison:
        comparing.finish(s.uri, comparison, out, data_path(s.dataset), s.budget_metric)
    return out
