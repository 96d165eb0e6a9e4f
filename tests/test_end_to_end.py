"""A tiny real search: local Ray on 127.0.0.1, Optuna, ASHA, MLflow on SQLite; then `table`; then the same
command again, which must restore the finished study instead of rerunning or duplicating anything."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from sparsebench.methods.core.metrics import EPOCH_KEYS
from sparsebench.workflows import tracking
from sparsebench.workflows.cli import main
from sparsebench.workflows.trainable import STATE_FILE

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ARGV = ["search", "--methods", "dense", "--dataset", "digits", "--num-samples", "3", "--epochs", "2",
        "--max-concurrent", "2", "--seed", "7"]



def _runs(client: MlflowClient, exp_id: str, kind: str):
    return client.search_runs([exp_id], filter_string=f"tags.`{tracking.TAG_KIND}` = '{kind}'")


def test_search_records_parent_and_child_runs_then_table(in_tmp_cwd, ray_session, capsys):
    assert main(ARGV) == 0
    out = capsys.readouterr().out
    assert "| search/digits | dense" in out

    client = MlflowClient(tracking_uri=f"sqlite:///{in_tmp_cwd / 'mlflow.db'}")
    exp = client.get_experiment_by_name("search/digits")
    parents = _runs(client, exp.experiment_id, "parent")
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    for tag in ("git.commit", "git.dirty", "version.torch", "version.ray", "command", "driver.host"):
        assert tag in parent.data.tags, tag
    children = _runs(client, exp.experiment_id, "trial")
    assert len(children) == 3
    hashes = set()
    for run in children:
        assert run.data.tags[tracking.PARENT_TAG] == parent.info.run_id
        assert run.info.status == "FINISHED"
        assert set(EPOCH_KEYS) <= set(run.data.metrics), set(EPOCH_KEYS) - set(run.data.metrics)
        assert run.data.params["method"] == "dense" and "train.lr" in run.data.params
        assert run.data.tags["dataset_checksum"] and run.data.tags["trial.host"] and run.data.tags["git.commit"]
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")]
        assert steps == sorted(set(steps)) and steps[0] == 1  # each epoch logged once
        hashes.add(run.data.tags["config_hash"])
    assert len(hashes) == 3  # Optuna sampled three different configs

    # Tune's own record in ./ray_results: per trial a result.json with the epochs MLflow holds and a progress.csv,
    # no TensorBoard events (workflows/search.py, tune_defaults); a trial that trained every epoch has a checkpoint
    # of its final epoch (workflows/checkpointing.py; one ASHA stopped after a few seconds may have none).
    trial_dirs = [d for d in (in_tmp_cwd / "ray_results").glob("dense-digits-*/*") if d.is_dir()]
    assert len(trial_dirs) == 3
    by_trial, full = {r.data.tags[tracking.TAG_TRIAL]: r for r in children}, 0
    for d in trial_dirs:
        reported = [json.loads(line)["epoch"] for line in (d / "result.json").read_text().splitlines()]
        run = next(r for t, r in by_trial.items() if d.name.startswith(t))
        assert reported == [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")], d.name
        assert (d / "progress.csv").is_file() and not list(d.glob("events.out.tfevents*")), sorted(os.listdir(d))
        if reported[-1] == 2:
            full += 1
            last = max(d.glob("checkpoint_*"))
            assert torch.load(last / STATE_FILE, map_location="cpu", weights_only=False)["epoch"] == 2
    assert full >= 1

    assert main(["table", "--experiment", "search/digits"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split("|")[1].strip() == "experiment" and len(table) == 3
    row = [c.strip() for c in table[2].split("|")[1:-1]]
    assert row[1:3] == ["dense", "digits"] and row[-2] == "3" and row[-1] in hashes
    assert main(["table", "--experiment", "search/digits", "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith("experiment,method,dataset,test_acc")

    # Same command again: the study is restored from ./ray_results, nothing is rerun or duplicated.
    assert main(ARGV) == 0
    assert "restoring study" in capsys.readouterr().out
    assert len(_runs(client, exp.experiment_id, "parent")) == 1
    again = _runs(client, exp.experiment_id, "trial")
    assert sorted(r.info.run_id for r in again) == sorted(r.info.run_id for r in children)
    for run in again:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")]
        assert steps == sorted(set(steps))


def test_pruning_curve_reaches_mlflow_as_metrics_table_and_plot(in_tmp_cwd, ray_session):
    """One trial with train.prune_curve: its child run holds `pruned_<split>_acc` with the removed percentage as
    step, and the curve's table (JSON, CSV) and plot (PNG) as artifacts; the curve starts at the run's test_acc."""
    space = in_tmp_cwd / "space.yaml"
    space.write_text("method: spectral\n"
                     "fixed:\n  model.variant: eig_out_full\n  model.hidden: [32]\n  model.bias: false\n"
                     "  train.optimizer: adam\n  train.lr: 0.01\n  train.prune_curve: [0, 50, 100]\n"
                     "space:\n  train.batch_size: {type: categorical, choices: [32, 64]}\n")
    assert main(["search", "--methods", "spectral", "--search-space", str(space), "--dataset", "digits",
                 "--num-samples", "1", "--epochs", "2", "--max-concurrent", "1"]) == 0
    client = MlflowClient(tracking_uri=f"sqlite:///{in_tmp_cwd / 'mlflow.db'}")
    exp = client.get_experiment_by_name("search/digits")
    (run,) = _runs(client, exp.experiment_id, "trial")
    hist = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "pruned_test_acc")}
    assert sorted(hist) == [0, 50, 100]
    assert hist[0] == run.data.metrics["test_acc"] and hist[100] < 0.25   # no hidden node left: near chance
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "pruned_val_acc")) == [0, 50, 100]
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"pruning_curve.json", "pruning_curve.csv", "pruning_curve.png"} <= names, names
    csv = (Path(client.download_artifacts(run.info.run_id, "pruning_curve.csv", str(in_tmp_cwd)))).read_text()
    assert csv.splitlines()[0] == "percent,nodes_removed,weights_nonzero,val_acc,test_acc"
    assert [line.split(",")[1] for line in csv.splitlines()[1:]] == ["0", "16", "32"]


def test_search_on_a_csv_file_lands_in_mlflow_with_its_dataset_input(in_tmp_cwd, ray_session, capsys):
    """`--dataset wine.csv --target class` through Ray, Optuna and MLflow: each trial run has the file as its
    dataset input, and the experiment opens in the UI's model-training view."""
    import numpy as np
    import pandas as pd
    from sklearn.datasets import load_wine

    wine = load_wine(as_frame=True).frame
    wine.insert(0, "class", np.array(["c0", "c1", "c2"])[wine.pop("target")])
    wine.to_csv(in_tmp_cwd / "wine.csv", index=False)
    assert main(["search", "--methods", "dense", "--dataset", "wine.csv", "--target", "class", "--num-samples", "1",
                 "--epochs", "2", "--max-concurrent", "1"]) == 0
    out = capsys.readouterr().out
    assert "| search/wine.csv | dense" in out
    client = MlflowClient(tracking_uri=f"sqlite:///{in_tmp_cwd / 'mlflow.db'}")
    exp = client.get_experiment_by_name("search/wine.csv")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    # The 3.17 UI reads its view from the address, not the tag: the printed link opens the runs table.
    assert f"http://127.0.0.1:5000/#/experiments/{exp.experiment_id}?workflowType=machine_learning" in out
    (trial,) = _runs(client, exp.experiment_id, "trial")
    (inp,) = client.get_run(trial.info.run_id).inputs.dataset_inputs
    assert (inp.dataset.name, inp.dataset.source_type) == ("wine.csv", "local")
    assert json.loads(inp.dataset.source)["uri"] == str(in_tmp_cwd / "wine.csv")
    profile = json.loads(inp.dataset.profile)
    assert profile["n_train"] + profile["n_val"] + profile["n_test"] == 178 and profile["num_classes"] == 3
    assert trial.data.tags.get("mlflow.source.git.commit", "unknown") == trial.data.tags["git.commit"]
    assert trial.data.params["data.target"] == "class"
