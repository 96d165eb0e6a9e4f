"""MLflow runs -> pandas -> tables (shrinkbench's one fixed-column DataFrame for all runs).

`runs_frame` has one row per trial run with fixed columns; `best_table` keeps, per (experiment, method,
dataset), the trial with the best validation accuracy and reports ITS test accuracy: choosing by test
accuracy would overstate every method. Runs of a budget search (issue 16) are grouped per budget too, and a trial
whose measured size missed its budget by more than 5% (`budget_feasible` = 0) is never chosen.
"""
from __future__ import annotations

import pandas as pd

from sparsebench.methods.core.budget import within_budget

from . import tracking
from .errors import TableError

FLOP_COLUMNS = ("flops_inference", "flops_train")   # per example (methods/core/metrics.py, module docstring)
RUN_COLUMNS = ["experiment", "method", "dataset", "stage", "status", "run_id", "parent_run_id", "config_hash",
               "val_acc", "test_acc", "train_acc", "params_trainable", "params_dense", "weights_nonzero",
               "flops_inference", "flops_train", "weight_sparsity", "neurons_active", "neuron_sparsity", "hoyer", "act_corr", "weight_cos", "dead_units",
               "epochs", "seconds", "diverged", "budget", "budget_metric", "budget_feasible"]
TABLE_COLUMNS = ["experiment", "method", "dataset", "test_acc", "val_acc", "params_trainable", "weights_nonzero",
                 "flops_inference", "flops_train", "weight_sparsity", "neurons_active", "neuron_sparsity", "act_corr", "epochs", "trials", "config_hash"]
FORMATS = ("markdown", "csv", "latex", "html")


def experiments(c, experiment: str | None) -> list:
    """The MLflow experiment named `experiment`, or every experiment but MLflow's empty 'Default' when None;
    TableError naming the experiments there are when the name is unknown."""
    if experiment:
        exp = c.get_experiment_by_name(experiment)
        if exp is None:
            names = sorted(e.name for e in c.search_experiments())
            raise TableError(f"unknown experiment {experiment!r}; available: {', '.join(names) or 'none'}")
        return [exp]
    return [e for e in c.search_experiments() if e.name != "Default"]


def runs_frame(tracking_uri: str, experiment: str | None = None, parent_run_ids: list[str] | None = None) -> pd.DataFrame:
    """One row per trial run of `experiment` (all experiments when None), optionally of some parent runs only."""
    c = tracking.client(tracking_uri)
    exps = experiments(c, experiment)
    trial = f"tags.`{tracking.TAG_KIND}` = 'trial'"
    # Filtered by parent in the query: an experiment keeps every earlier search's runs too.
    filters = ([f"{trial} and tags.`{tracking.PARENT_TAG}` = '{p}'" for p in parent_run_ids]
               if parent_run_ids is not None else [trial])
    rows = []
    for exp in exps:
        runs = [r for f in filters for r in c.search_runs([exp.experiment_id], filter_string=f, max_results=50000)]
        for r in runs:
            m, t = r.data.metrics, r.data.tags
            rows.append({
                "experiment": exp.name, "method": t.get("method"), "dataset": t.get("dataset"), "stage": t.get("stage"),
                "status": r.info.status, "run_id": r.info.run_id, "parent_run_id": t.get(tracking.PARENT_TAG),
                "config_hash": t.get("config_hash"), "val_acc": m.get("val_acc"), "test_acc": m.get("test_acc"),
                "train_acc": m.get("train_acc"), "params_trainable": m.get("params_trainable"),
                "params_dense": m.get("params_dense"), "weights_nonzero": m.get("weights_nonzero"),
                "flops_inference": m.get("flops_inference"), "flops_train": m.get("flops_train"),
                "weight_sparsity": m.get("weight_sparsity"), "neurons_active": m.get("neurons_active"),
                "neuron_sparsity": m.get("neuron_sparsity"),
                "hoyer": m.get("hoyer"), "act_corr": m.get("act_corr"), "weight_cos": m.get("weight_cos"),
                "dead_units": m.get("dead_units"), "epochs": m.get("epoch"), "seconds": m.get("seconds"),
                "diverged": t.get("diverged") == "true",
                "budget": float(t["budget"]) if t.get("budget") else None, "budget_metric": t.get("budget_metric"),
                "budget_feasible": m.get("budget_feasible"),
            })
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def best_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (experiment, method, dataset): the FINISHED trial with the best val_acc (ASHA-stopped trials count:
    they finished, at fewer epochs), and the number of trials. Killed, failed or diverged runs are never chosen."""
    budgeted = "budget" in runs and runs["budget"].notna().any()
    runs = runs.assign(**{c: None for c in FLOP_COLUMNS if c not in runs})   # a frame from before FLOPs
    columns = TABLE_COLUMNS if not budgeted else [*TABLE_COLUMNS[:3], "budget", *TABLE_COLUMNS[3:], "infeasible"]
    done = runs[runs["val_acc"].notna() & (runs["status"] == "FINISHED") & ~runs["diverged"].astype(bool)]
    keys = ["experiment", "method", "dataset"]
    if budgeted:
        runs = runs.assign(budget=runs["budget"].fillna(0.0), infeasible=runs["budget_feasible"].eq(0.0))
        done = runs.loc[done.index]
        done = done[~done["infeasible"]].drop(columns="infeasible")
        keys.append("budget")
    if done.empty:
        return pd.DataFrame(columns=columns)
    counts = runs.groupby(keys).size().rename("trials")
    if budgeted:
        counts = pd.concat([counts, runs.groupby(keys)["infeasible"].sum().astype(int)], axis=1)
    # Ties on val_acc go to fewer trainable parameters, then to the earlier run id (deterministic).
    ordered = done.sort_values(["val_acc", "params_trainable", "run_id"], ascending=[False, True, True])
    best = ordered.groupby(keys, as_index=False).head(1).set_index(keys).join(counts).reset_index()
    for col in ("params_trainable", "weights_nonzero", "neurons_active", "epochs", "trials"):
        best[col] = best[col].astype("Int64")
    for col in FLOP_COLUMNS:   # runs logged before FLOPs were measured have none: n/a, never 0
        best[col] = pd.to_numeric(best[col]).round().astype("Int64")
    if budgeted and (best["budget"] % 1 == 0).all():
        best["budget"] = best["budget"].astype("Int64")
    return best[columns].sort_values(keys).reset_index(drop=True)


def render(df: pd.DataFrame, fmt: str = "markdown") -> str:
    if fmt not in FORMATS:
        raise TableError(f"unknown format {fmt!r}; allowed: {', '.join(FORMATS)}")
    shown = df.copy()
    for col in ("test_acc", "val_acc", "weight_sparsity", "neuron_sparsity", "act_corr"):
        if col in shown and pd.api.types.is_numeric_dtype(shown[col]):   # budget_table's test_acc is text
            shown[col] = shown[col].map(lambda v: f"{v:.4f}" if pd.notna(v) else "n/a")
    if fmt == "markdown":
        return shown.to_markdown(index=False, disable_numparse=True)
    if fmt == "csv":
        return df.to_csv(index=False)
    if fmt == "latex":
        return shown.to_latex(index=False, escape=True)
    return shown.to_html(index=False)


# ---- method x budget table (issue 16) ----
BUDGET_TABLE_COLUMNS = ["dataset", "budget", "method", "test_acc", "n", "params_trainable", "weights_nonzero",
                        *FLOP_COLUMNS, "seconds", "verdict", "p_value"]
ALPHA = 0.05   # significance level of the winner's test


def welch_p(a, b) -> float:
    """Two-sided p-value of Welch's unequal-variance t-test (Welch 1947; scipy.stats.ttest_ind, equal_var=False).
    1.0 when either side has fewer than two values or both have no spread (no evidence of a difference)."""
    from scipy import stats

    a, b = [float(x) for x in a], [float(x) for x in b]
    if len(a) < 2 or len(b) < 2:
        return 1.0
    if max(a) == min(a) and max(b) == min(b):
        return 0.0 if a[0] != b[0] else 1.0
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def budget_table(runs: pd.DataFrame, unreachable: list[tuple[str, str, float, str]] = (),
                 metric: str | None = None) -> pd.DataFrame:
    """Per (dataset, budget, method): test accuracy mean ± std (n) over the cell's runs (the final seeds), the mean
    sizes and wall time. Per (dataset, budget), the cell of highest mean is the `winner` only when Welch's t-test
    against the runner-up gives p < ALPHA; otherwise it and every cell not significantly below it (p >= ALPHA against
    it) are a `tie`. `unreachable` adds (dataset, method, budget, why) cells that ran nothing. With the budget
    `metric`, a cell whose runs measured a mean size more than 5% off its budget (the final seeds of a configuration
    chosen before it trained to the end, methods/core/method.py `size_changes`) is `off budget` and takes no part in
    the verdicts: it was not compared at the budget (issue 16: such a run "never enters a comparison")."""
    rows = []
    for (dataset, budget, method), g in runs.groupby(["dataset", "budget", "method"]):
        acc = g["test_acc"].dropna()
        rows.append({"dataset": dataset, "budget": budget, "method": method, "acc": list(acc),
                     "mean": acc.mean(), "std": acc.std(ddof=1) if len(acc) > 1 else 0.0, "n": len(acc),
                     "params_trainable": g["params_trainable"].mean(), "weights_nonzero": g["weights_nonzero"].mean(),
                     **{c: g[c].mean() if c in g else None for c in FLOP_COLUMNS},
                     "seconds": g["seconds"].mean(), "verdict": "", "p_value": None})
    by_budget: dict[tuple, list[dict]] = {}
    for r in rows:
        by_budget.setdefault((r["dataset"], r["budget"]), []).append(r)
        size = r.get(metric) if metric else None
        if size is not None and pd.notna(size) and not within_budget(float(size), float(r["budget"])):
            r["verdict"] = f"off budget: {size / r['budget'] - 1:+.1%} {metric}"
    for cells in by_budget.values():
        ranked = sorted((c for c in cells if c["n"] and not c["verdict"]), key=lambda c: -c["mean"])
        if len(ranked) < 2:
            continue
        best, second = ranked[0], ranked[1]
        p = welch_p(best["acc"], second["acc"])
        best["p_value"] = p
        if p < ALPHA:
            best["verdict"] = "winner"
            continue
        best["verdict"] = "tie"
        for c in ranked[1:]:
            c["p_value"] = welch_p(best["acc"], c["acc"])
            if c["p_value"] >= ALPHA:
                c["verdict"] = "tie"
    out = [{"dataset": r["dataset"], "budget": r["budget"], "method": r["method"],
            "test_acc": f"{r['mean']:.4f} ± {r['std']:.4f} ({r['n']})" if r["n"] else "n/a",
            "n": r["n"], "params_trainable": r["params_trainable"], "weights_nonzero": r["weights_nonzero"],
            **{c: r[c] for c in FLOP_COLUMNS}, "seconds": r["seconds"], "verdict": r["verdict"], "p_value": r["p_value"]} for r in rows]
    out += [{"dataset": d, "budget": b, "method": m, "test_acc": "unreachable", "n": 0, "params_trainable": None,
             "weights_nonzero": None, **dict.fromkeys(FLOP_COLUMNS), "seconds": None, "verdict": f"unreachable: {why}", "p_value": None}
            for d, m, b, why in unreachable]
    df = pd.DataFrame(out, columns=BUDGET_TABLE_COLUMNS)
    if df.empty:
        return df
    for col in ("params_trainable", "weights_nonzero", *FLOP_COLUMNS):
        df[col] = pd.to_numeric(df[col]).round().astype("Int64")
    df["seconds"] = df["seconds"].round(1)
    if (df["budget"] % 1 == 0).all():
        df["budget"] = df["budget"].astype("Int64")
    df["p_value"] = df["p_value"].map(lambda v: f"{v:.3g}" if v is not None and pd.notna(v) else "")
    return df.sort_values(["dataset", "budget", "method"]).reset_index(drop=True)
