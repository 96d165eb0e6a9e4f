"""The *comparison* run of a budget search (issue 16): one MLflow parent run per `sparsebench search --budgets`
(or `--objective pareto`) command, with every (method, budget) study's parent run nested under it, holding the method x budget table
(`budget_table.md|csv|html`), the figures (`accuracy_vs_budget_<dataset>.png`, `pareto_<dataset>.png`) and
`comparison.json`, the record from which `sparsebench table --by budget` rebuilds the same table from MLflow alone.

The table's rows are the final-stage runs of `--final-seeds` (each cell's best configuration over N seeds); without
a final stage, each cell's best feasible trial (one run, so never a winner). The Pareto figure covers every finished
trial of every study of the command, feasible or not (its x axis is the measured size).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pandas as pd

from sparsebench.methods.data import dataset_label

from . import budgets as budgeting
from . import tracking
from .plots import comparison_figures
from .tables import FLOP_COLUMNS, TableError, best_table, budget_table, experiments, render, runs_frame

KIND = "comparison"
RECORD = "comparison.json"
ROW_COLUMNS = ["dataset", "budget", "method", "test_acc", "params_trainable", "weights_nonzero", *FLOP_COLUMNS, "seconds"]
OUTPUT = Path("comparisons")   # local copies of the table and figures, one folder per comparison


def name_of(study_names: list[str], dataset: str) -> str:
    """The comparison's identity: the studies it compares (their names hash everything that defines them, the
    MLflow store and experiment included), so the same command reopens the same comparison run."""
    digest = hashlib.sha256(json.dumps(sorted(study_names)).encode()).hexdigest()[:12]
    return f"comparison-{dataset_label(dataset)}-{digest}"


def start(c, exp_id: str, studies, s) -> str:
    """The comparison run (created once, reopened by a rerun of the same command)."""
    labels = ",".join(budgeting.label(b) for b in sorted(s.budgets)) or "no budgets"
    return tracking.start_parent_run(
        c, exp_id, name_of([st.name for st in studies], s.dataset), kind=KIND,
        run_name=f"comparison {labels} {s.budget_metric}" + (" pareto" if s.objective == "pareto" else ""),
        tags={"stage": "comparison", "dataset": studies[0].base["data.dataset"], "budget_metric": s.budget_metric},
        params={"budgets": labels, "budget_metric": s.budget_metric, "methods": ",".join(s.methods),
                "num_samples": s.num_samples, "epochs": s.epochs, "seed": s.seed, "objective": s.objective})


def nest(c, comparison: str, study_parent: str) -> None:
    """A study's parent run under the comparison run (the MLflow UI nests runs by this tag)."""
    tracking.set_tags(c, study_parent, {tracking.PARENT_TAG: comparison})


def record_of(results: list[dict[str, Any]], dataset: str, metric: str, final: dict[str, Any] | None) -> dict[str, Any]:
    """What the comparison's table is computed from, as ids in MLflow (comparison.json)."""
    rec = {"experiment": results[0]["experiment"], "dataset": dataset, "budget_metric": metric,
           "study_parents": [r["parent_run_id"] for r in results if r["parent_run_id"]],
           "unreachable": [[dataset, r["method"], r["budget"], r["unreachable"]] for r in results if r.get("unreachable")],
           "final": None}
    if final is not None:
        rec["final"] = {"experiment": final["mlflow_experiment"], "parent_run_id": final["parent_run_id"],
                        "arms": final["budget_arms"], "planned": sorted(final["planned_keys"])}
    return rec


def final_rows(c, final: dict[str, Any]) -> pd.DataFrame:
    """The newest FINISHED final-stage run of each planned cell (as reproduce.read_records picks them), one row each."""
    exp = c.get_experiment_by_name(final["experiment"])
    planned, arms, seen, rows = set(final["planned"]), final["arms"], set(), []
    runs = [] if exp is None else tracking.children(c, exp.experiment_id, final["parent_run_id"], "FINISHED",
                                                    where="tags.stage = 'final'")
    for r in runs:   # newest first
        t, m = r.data.tags, r.data.metrics
        key = t.get(tracking.TAG_CELL)
        if key not in planned or key in seen or t.get("cell.arm") not in arms:
            continue
        seen.add(key)
        method, budget = arms[t["cell.arm"]]
        rows.append({"dataset": t.get("dataset"), "budget": float(budget), "method": method,
                     **{k: m.get(k) for k in ROW_COLUMNS[3:]}})
    return pd.DataFrame(rows, columns=ROW_COLUMNS)


def best_trial_rows(trials: pd.DataFrame) -> pd.DataFrame:
    """Without a final stage: each cell's best feasible trial (tables.best_table's choice), one row per cell."""
    best = best_table(trials)
    if best.empty or "budget" not in best:   # no budget axis (--objective pareto alone): no method x budget cells
        return pd.DataFrame(columns=ROW_COLUMNS)
    keys = ["method", "dataset", "budget", "config_hash"]
    seconds = trials.assign(budget=trials["budget"].astype(float)).drop_duplicates(keys)[[*keys, "seconds"]]
    best = best.assign(budget=best["budget"].astype(float)).merge(seconds, on=keys, how="left")
    return best[ROW_COLUMNS].reset_index(drop=True)


def frames(uri: str, rec: dict[str, Any]) -> tuple[pd.DataFrame, list[tuple], pd.DataFrame]:
    """(table rows, unreachable cells, every trial of the studies) of a comparison record, read from MLflow."""
    trials = (runs_frame(uri, rec["experiment"], parent_run_ids=rec["study_parents"]) if rec["study_parents"]
              else pd.DataFrame(columns=["dataset", "method", "test_acc", rec["budget_metric"]]))
    rows = final_rows(tracking.client(uri), rec["final"]) if rec["final"] else best_trial_rows(trials)
    finished = trials[(trials["status"] == "FINISHED") & ~trials["diverged"].astype(bool)] if len(trials) else trials
    return rows, [tuple(u) for u in rec["unreachable"]], deployed_sizes(finished)


def deployed_sizes(trials: pd.DataFrame) -> pd.DataFrame:
    """The trials whose measured size is that of the network they deploy: in a budget study, those with a
    `budget_feasible` record (search.judged: a trial of a method whose size changes in training records none when
    ASHA stopped it early, e.g. spectral_filter in its eigenvalue-only phase, with a few hundred trainable
    parameters, which would otherwise lead the Pareto front with networks nobody trained to the end)."""
    if trials.empty or "budget_feasible" not in trials:
        return trials
    return trials[trials["budget"].isna() | trials["budget_feasible"].notna()]


def finish(uri: str, comparison: str, results: list[dict[str, Any]], dataset: str, metric: str,
           final: dict[str, Any] | None = None) -> dict[str, Any]:
    """Log the comparison's record, table and figures to its run (and the table beside the final stage's), write
    local copies under comparisons/<name>/, and close the run. Returns {table (DataFrame), markdown, files}."""
    c = tracking.client(uri)
    rec = record_of(results, dataset, metric, final)
    c.log_dict(comparison, rec, RECORD)
    rows, unreachable, trials = frames(uri, rec)
    table = budget_table(rows, unreachable, metric)
    run = c.get_run(comparison)
    out = OUTPUT / run.data.tags[tracking.TAG_STUDY]
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for fmt, name in (("markdown", "budget_table.md"), ("csv", "budget_table.csv"), ("html", "budget_table.html")):
        text = render(table, fmt)
        c.log_text(comparison, text, name)
        if final is not None:
            c.log_text(final["parent_run_id"], text, name)
        (out / name).write_text(text)
        files[name] = out / name
    for name, fig in comparison_figures(rows, trials, metric).items():
        fig.savefig(out / name, dpi=120)
        c.log_figure(comparison, fig, name)
        files[name] = out / name
    tags = {"final_seeds": "true" if final is not None else "false"}
    if final is not None:
        tags.update({"final_run_id": final["parent_run_id"], "final_experiment": final["mlflow_experiment"]})
    tracking.set_tags(c, comparison, tags)
    errors = any(r.get("errors") for r in results) or (final is not None and not final.get("complete", True))
    c.set_terminated(comparison, status="FAILED" if errors else "FINISHED")
    return {"table": table, "markdown": render(table, "markdown"), "files": files}


def abort(uri: str, comparison: str, status: str = "KILLED") -> None:
    tracking.client(uri).set_terminated(comparison, status=status)


def read_record(c, run_id: str) -> dict[str, Any]:
    """The run's comparison.json, through the artifact store (a served one too), without MLflow's progress bar on
    stderr (the command's output is the table)."""
    import os
    import tempfile

    before = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    try:
        with tempfile.TemporaryDirectory() as d:
            return json.loads(Path(c.download_artifacts(run_id, RECORD, d)).read_text())
    finally:
        if before is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = before


def latest_records(uri: str, experiment: str | None) -> list[tuple[str, str, dict[str, Any]]]:
    """(experiment, comparison run id, record) of the newest comparison run of `experiment` (of every experiment
    when None) whose record was written; TableError when there is none."""
    c = tracking.client(uri)
    out = []
    for exp in experiments(c, experiment):
        for r in c.search_runs([exp.experiment_id], filter_string=f"tags.`{tracking.TAG_KIND}` = '{KIND}'",
                               order_by=["attributes.start_time DESC"], max_results=100):
            try:
                rec = read_record(c, r.info.run_id)
            except Exception:  # noqa: BLE001 - a comparison interrupted before its record: the next older one
                continue
            out.append((exp.name, r.info.run_id, rec))
            break
    if not out:
        where = f"experiment {experiment!r}" if experiment else "any experiment"
        raise TableError(f"--by budget: no budget comparison in {where}; run 'sparsebench search ... --budgets ...' first")
    return out


def stored_table(uri: str, experiment: str | None) -> pd.DataFrame:
    """The method x budget table of the newest comparison of each experiment, recomputed from MLflow (the same
    function and the same runs as when the search logged it), with the experiment as first column."""
    parts = []
    for name, _, rec in latest_records(uri, experiment):
        rows, unreachable, _ = frames(uri, rec)
        parts.append(budget_table(rows, unreachable, rec["budget_metric"]).assign(experiment=name))
    table = pd.concat(parts, ignore_index=True)
    return table[["experiment", *[col for col in table.columns if col != "experiment"]]]
