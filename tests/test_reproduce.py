"""`sparsebench reproduce baselines --quick` end to end: local Ray on 127.0.0.1, MLflow on SQLite. The parent and
final runs in MLflow, the table files and their numbers, the plot, and a resumed reproduction running only the
cell that is missing."""
from __future__ import annotations

import shlex

import mlflow
import mlflow.pytorch
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from sparsebench.methods import RunConfig, metrics
from sparsebench.methods.core.train import evaluation_data
from sparsebench.workflows import tracking
from sparsebench.workflows.cli import main
from sparsebench.workflows.protocol import load_paper
from sparsebench.workflows.repro_table import COLUMNS
from sparsebench.workflows.results_table import parse_csv, render_markdown

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ARGV = ["reproduce", "baselines", "--quick", "--experiment", "dense_digits", "--max-concurrent", "2"]



def final_runs(client, exp_id, status=None):
    flt = f"tags.`{tracking.TAG_KIND}` = 'trial' and tags.stage = 'final'"
    runs = client.search_runs([exp_id], filter_string=flt)
    return [r for r in runs if status is None or r.info.status == status]


def test_quick_reproduction_tables_and_resume(in_tmp_cwd, ray_session, capsys):
    assert main(ARGV) == 0
    out = capsys.readouterr().out
    assert "[dense_digits] 6 runs, 0 already finished in MLflow, 6 to run" in out
    assert "[QUICK: at most 1000 training and test samples, 2 epochs, 2 seeds" in out

    client = MlflowClient(tracking_uri=f"sqlite:///{in_tmp_cwd / 'mlflow.db'}")
    exp = client.get_experiment_by_name("reproduce/baselines")
    parents = client.search_runs([exp.experiment_id], f"tags.`{tracking.TAG_KIND}` = 'parent'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0].info.run_id
    assert parents[0].data.tags["runs_finished"] == "6" and parents[0].data.params["quick"] == "True"
    runs = final_runs(client, exp.experiment_id, "FINISHED")
    assert len(runs) == 6
    assert {(r.data.tags["cell.sweep"], r.data.tags["cell.seed"]) for r in runs} == {
        (s, str(seed)) for s in ("[64]", "[256]", "[256, 128]") for seed in (0, 1)}
    assert all(r.data.tags[tracking.PARENT_TAG] == parent and r.data.params["data.max_train"] == "1000"
               and r.data.params["train.epochs"] == "2" for r in runs)

    # The table's numbers are the runs' metrics.
    folder = in_tmp_cwd / "reproductions" / "baselines" / "dense_digits-quick"
    table = pd.read_csv(folder / "table.csv")
    assert list(table.columns) == COLUMNS and len(table) == 3
    for _, row in table.iterrows():
        sweep = row.setting.split("=", 1)[1]
        accs = [r.data.metrics["test_acc"] for r in runs if r.data.tags["cell.sweep"] == sweep]
        params = {r.data.metrics["params_trainable"] for r in runs if r.data.tags["cell.sweep"] == sweep}
        assert row.n == 2 and row.measured == pytest.approx(sum(accs) / 2, abs=1e-12)
        assert row.params_trainable == params.pop() and pd.isna(row.published)
        hashes = {r.data.tags["cell.setting_hash"] for r in runs if r.data.tags["cell.sweep"] == sweep}
        assert hashes == {row.setting_hash}
    assert "| none " in (folder / "table.md").read_text()   # baselines publish nothing
    png = folder / "dense_digits_digits_vs_params.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    artifacts = {a.path for a in client.list_artifacts(parent)}

    # The paper's results table covers every experiment of the protocol; the Markdown is the CSV's rendering.
    paper_csv = in_tmp_cwd / "reproductions" / "baselines" / "table-quick.csv"
    rows, header = parse_csv(paper_csv.read_text())
    assert header["command"] == shlex.join(["sparsebench", *ARGV]) and "QUICK" in header["title"]
    assert render_markdown(rows, header) == paper_csv.with_suffix(".md").read_text()
    assert set(rows.experiment) == {e.name for e in load_paper("baselines").experiments}
    mine = rows[rows.experiment == "dense_digits"]
    assert list(mine.n) == [2, 2, 2] and set(mine.verdict) == {"no published value"}
    assert set(rows[rows.experiment != "dense_digits"].verdict) == {"not run"}
    assert all(w > 0 for w in mine.wall_s) and all(c and c != "unknown" for c in mine.commit)
    assert {"table.md", "table.csv", "table.tex", "table.html", png.name} <= artifacts

    # Resume: one cell's run is lost (marked FAILED); the rerun runs only that cell, under the same parent.
    lost = runs[0]
    client.set_terminated(lost.info.run_id, status="FAILED")
    assert main(ARGV) == 0
    out = capsys.readouterr().out
    assert "[dense_digits] 6 runs, 5 already finished in MLflow, 1 to run" in out
    again = final_runs(client, exp.experiment_id, "FINISHED")
    assert len(again) == 6 and len(final_runs(client, exp.experiment_id)) == 7
    new = next(r for r in again if r.info.run_id not in {x.info.run_id for x in runs})
    assert new.data.tags["cell.key"] == lost.data.tags["cell.key"] and new.data.tags[tracking.PARENT_TAG] == parent
    assert new.data.metrics["test_acc"] == lost.data.metrics["test_acc"]   # same cell, same seed: same result
    assert len(client.search_runs([exp.experiment_id], f"tags.`{tracking.TAG_KIND}` = 'parent'")) == 1


def test_search_final_stage_reruns_each_best_config_over_seeds(in_tmp_cwd, ray_session):
    from sparsebench.workflows.reproduce import ReproduceSettings, final_stage

    best = {"method": "dense", "data.dataset": "digits", "train.epochs": 1, "model.hidden": [16], "train.lr": 0.05}
    results = [{"best_config": best}, {"best_config": None}]    # the second method's study had no finished trial
    final = final_stage(results, "digits", 2, ReproduceSettings(paper="search-digits"), echo=False)
    assert final["complete"] and final["finished"] == 2
    (row,) = final["table"].itertuples()
    assert row.arm == "dense" and row.n == 2 and row.params_trainable == 64 * 16 + 16 + 16 * 10 + 10
    client = MlflowClient(tracking_uri=f"sqlite:///{in_tmp_cwd / 'mlflow.db'}")
    exp = client.get_experiment_by_name("reproduce/search-digits")
    runs = final_runs(client, exp.experiment_id, "FINISHED")
    assert sorted(r.data.params["train.seed"] for r in runs) == ["0", "1"]
    assert all(r.data.params["model.hidden"] == "(16,)" and r.data.params["train.lr"] == "0.05" for r in runs)
    assert row.measured == pytest.approx(sum(r.data.metrics["test_acc"] for r in runs) / 2, abs=1e-12)
    # Each final run logged the network it trained (in a Ray worker): it loads back with the run's test accuracy.
    mlflow.set_tracking_uri(f"sqlite:///{in_tmp_cwd / 'mlflow.db'}")
    for r in runs:
        uri = f"runs:/{r.info.run_id}/{tracking.MODEL_NAME}"
        data = evaluation_data(RunConfig.from_flat(mlflow.models.get_model_info(uri).metadata["sparsebench_config"]))
        model = mlflow.pytorch.load_model(uri)
        assert metrics.accuracy(model, data.x_test, data.y_test).item() == r.data.metrics["test_acc"]
        # What the trial used of its node, sampled in the worker (workflows/system_metrics.py).
        assert 0.0 <= r.data.metrics["system/cpu_utilization_percentage"] <= 100.0
