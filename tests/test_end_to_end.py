"""A tiny real search: local Ray on 127.0.0.1, Optuna, ASHA, MLflow on SQLite; then `table`; then the same
command again, which must restore the finished study instead of rerunning or duplicating anything."""
from __future__ import annotations

import pytest
import ray
from mlflow.tracking import MlflowClient

from methods.metrics import EPOCH_KEYS
from workflows import tracking
from workflows.cli import main

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ARGV = ["search", "--methods", "dense", "--dataset", "digits", "--num-samples", "3", "--epochs", "2",
        "--max-concurrent", "2", "--seed", "7"]


@pytest.fixture
def ray_session():
    yield
    ray.shutdown()


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
