"""The method x budget table (issue 16): mean ± std (n), sizes, and a winner only when Welch's t-test says so."""
from __future__ import annotations

import pandas as pd
from scipy import stats

from sparsebench.workflows.tables import budget_table, welch_p


def frame(cells: dict[tuple[str, float], list[float]]) -> pd.DataFrame:
    rows = [{"dataset": "digits", "budget": b, "method": m, "test_acc": a, "params_trainable": b * 1.01,
             "weights_nonzero": b * 0.9, "seconds": 2.0} for (m, b), accs in cells.items() for a in accs]
    return pd.DataFrame(rows)


def verdicts(df: pd.DataFrame, budget: float) -> dict[str, str]:
    return dict(zip(df[df["budget"] == budget]["method"], df[df["budget"] == budget]["verdict"]))


def test_clear_winner_and_tie():
    df = budget_table(frame({
        ("dense", 2000): [0.90, 0.91, 0.90, 0.92, 0.91], ("set", 2000): [0.80, 0.81, 0.79, 0.80, 0.82],
        ("dense", 8000): [0.93, 0.95, 0.91, 0.94, 0.92], ("set", 8000): [0.94, 0.92, 0.93, 0.95, 0.91],
        ("spectral", 8000): [0.60, 0.61, 0.62, 0.60, 0.59]}))
    assert verdicts(df, 2000) == {"dense": "winner", "set": ""}
    assert verdicts(df, 8000) == {"dense": "tie", "set": "tie", "spectral": ""}
    row = df[(df["budget"] == 2000) & (df["method"] == "dense")].iloc[0]
    assert row["test_acc"] == "0.9080 ± 0.0084 (5)" and row["n"] == 5 and row["params_trainable"] == 2020
    p = stats.ttest_ind([0.90, 0.91, 0.90, 0.92, 0.91], [0.80, 0.81, 0.79, 0.80, 0.82], equal_var=False).pvalue
    assert float(row["p_value"]) == float(f"{p:.3g}")


def test_one_seed_is_never_a_winner_and_unreachable_cells_show():
    df = budget_table(frame({("dense", 2000): [0.95], ("set", 2000): [0.50]}),
                      unreachable=[("digits", "spectral", 2000.0, "below its smallest network")])
    assert verdicts(df, 2000) == {"dense": "tie", "set": "tie", "spectral": "unreachable: below its smallest network"}
    assert welch_p([0.9], [0.1, 0.2]) == 1.0


def test_best_table_groups_by_budget_and_never_chooses_an_infeasible_trial():
    from sparsebench.workflows.tables import best_table

    runs = pd.DataFrame({
        "experiment": "e", "method": "dense", "dataset": "digits", "stage": "search", "status": "FINISHED",
        "run_id": ["a", "b", "c", "d"], "parent_run_id": "p", "config_hash": ["ha", "hb", "hc", "hd"],
        "val_acc": [0.90, 0.95, 0.80, 0.85], "test_acc": [0.9, 0.95, 0.8, 0.85], "train_acc": 1.0,
        "params_trainable": [2000, 2300, 8000, 8100], "params_dense": 30, "weights_nonzero": 10, "weight_sparsity": 0.0,
        "neurons_active": 5, "neuron_sparsity": 0.0, "hoyer": 0.1, "act_corr": 0.2, "weight_cos": 0.1, "dead_units": 0,
        "epochs": 4, "seconds": 1.0, "diverged": False, "budget": [2000.0, 2000.0, 8000.0, 8000.0],
        "budget_metric": "params_trainable", "budget_feasible": [1.0, 0.0, 1.0, 1.0]})
    table = best_table(runs)
    assert table["budget"].tolist() == [2000, 8000]
    assert table["config_hash"].tolist() == ["ha", "hd"]     # hb has the best val_acc but missed its budget by 15%
    assert table["trials"].tolist() == [2, 2] and table["infeasible"].tolist() == [1, 0]


def test_the_table_shows_each_cells_mean_flops_and_none_where_runs_have_none():
    runs = frame({("dense", 2000): [0.90, 0.91], ("set", 2000): [0.80, 0.81]})
    runs["flops_inference"] = [3600.0, 3602.0, 3000.0, 3001.0]
    runs["flops_train"] = [10800.0, 10806.0, 9500.0, 9502.0]
    df = budget_table(runs).set_index("method")
    assert df.loc["dense", "flops_inference"] == 3601 and df.loc["dense", "flops_train"] == 10803
    assert df.loc["set", "flops_inference"] == 3000     # 3000.5 rounds half to even
    old = budget_table(frame({("dense", 2000): [0.90, 0.91]}))     # runs logged before FLOPs were measured
    assert old["flops_inference"].isna().all() and "flops_train" in old


def test_a_cell_off_its_budget_is_marked_and_takes_no_part_in_the_verdicts():
    runs = frame({("dense", 2000): [0.90, 0.91, 0.90], ("set", 2000): [0.80, 0.81, 0.79],
                  ("set_neuron", 2000): [0.97, 0.98, 0.97]})
    runs.loc[runs["method"] == "set_neuron", "params_trainable"] = 2280.0     # final seeds 14% above the budget
    df = budget_table(runs, metric="params_trainable")
    assert verdicts(df, 2000) == {"dense": "winner", "set": "", "set_neuron": "off budget: +14.0% params_trainable"}
    assert verdicts(budget_table(runs), 2000)["set_neuron"] == "winner"      # without the metric: not checked
