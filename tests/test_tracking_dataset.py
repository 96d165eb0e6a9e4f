"""Every trial run logs its data as an MLflow dataset input (the UI's Dataset column), read back from a real
SQLite store: name, digest, source (the user's file, or a built-in set's provenance), schema and split sizes."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd

from sparsebench.methods import RunConfig, load_dataset
from sparsebench.workflows import tracking
from sparsebench.workflows.trainable import dataset_description
from sparsebench.workflows.trial import MlflowTrialCallback


def _trial_run_inputs(tmp_path, cfg: RunConfig, retried: bool = False):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    c = tracking.client(uri)
    exp_id = tracking.get_or_create_experiment(c, "search/x")
    tracking.start_parent_run(c, exp_id, "study-x", "dense-search", tags={}, params={})
    cb = MlflowTrialCallback(uri, "search/x", "study-x", stage="search", decode=lambda x: x, tags={}, max_epochs=2, echo=False)
    ds = load_dataset(cfg.data)
    described = dataset_description(cfg, ds.info)
    trial = SimpleNamespace(trial_id="t1", config=cfg.flat(), last_result={})
    cb.on_trial_start(0, [], trial)
    for epoch, host in ((1, "a"), (2, "b" if retried else "a")):  # a retry elsewhere places the run again
        cb.on_trial_result(0, [], trial, {"epoch": epoch, "val_acc": 0.5, "trial.host": host,
                                          "dataset_checksum": ds.info.checksum, "dataset_input": described})
    cb.on_experiment_end([])
    run = c.search_runs([exp_id], f"tags.`{tracking.TAG_KIND}` = 'trial'")[0]
    return c.get_run(run.info.run_id).inputs.dataset_inputs, ds


def test_a_user_file_is_the_runs_dataset_input(tmp_path):
    rng = np.random.default_rng(0)
    y = np.arange(45) % 3
    pd.DataFrame({"f1": rng.normal(size=45) + y, "f2": rng.normal(size=45), "label": y}).to_csv(tmp_path / "w.csv", index=False)
    cfg = RunConfig.from_flat({"method": "dense", "data.dataset": str(tmp_path / "w.csv"), "train.epochs": 2})
    inputs, ds = _trial_run_inputs(tmp_path, cfg, retried=True)
    assert len(inputs) == 1  # logged again after the retry, kept once
    d = inputs[0].dataset
    assert (d.name, d.digest, d.source_type) == ("w.csv", ds.info.checksum[:16], "local")
    assert json.loads(d.source) == {"uri": str(tmp_path / "w.csv")}
    profile = json.loads(d.profile)
    assert (profile["n_train"], profile["n_val"], profile["n_test"]) == (ds.info.n_train, ds.info.n_val, ds.info.n_test)
    assert profile["n_train"] + profile["n_val"] + profile["n_test"] == 45
    features = json.loads(json.loads(d.schema)["mlflow_tensorspec"]["features"])
    assert features[0]["tensor-spec"] == {"dtype": "float32", "shape": [-1, 2]}
    assert [t.value for t in inputs[0].tags if t.key == "mlflow.data.context"] == ["train"]


def test_a_built_in_set_names_its_provenance(tmp_path):
    cfg = RunConfig.from_flat({"method": "dense", "data.dataset": "digits", "train.epochs": 2})
    inputs, ds = _trial_run_inputs(tmp_path, cfg)
    d = inputs[0].dataset
    assert (d.name, d.source_type) == ("digits", "code")
    assert json.loads(d.source)["tags"]["provenance"] == ds.info.source
    assert json.loads(json.loads(d.schema)["mlflow_tensorspec"]["features"])[0]["tensor-spec"]["shape"] == [-1, 1, 8, 8]


def test_experiments_open_in_the_model_training_view(tmp_path):
    c = tracking.client(f"sqlite:///{tmp_path / 'm.db'}")
    new = tracking.get_or_create_experiment(c, "search/new")
    assert c.get_experiment(new).tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
    old = c.create_experiment("search/old")             # as an older sparsebench made it: tagged when reused
    mine = c.create_experiment("search/mine", tags={tracking.EXPERIMENT_KIND_TAG: "genai_development"})
    tracking.get_or_create_experiment(c, "search/old")
    tracking.get_or_create_experiment(c, "search/mine")
    assert c.get_experiment(old).tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
    assert c.get_experiment(mine).tags[tracking.EXPERIMENT_KIND_TAG] == "genai_development"  # the user's choice


def test_runs_carry_their_source_for_the_ui():
    tags = tracking.env_tags()
    assert tags["mlflow.source.name"] == tags["command"] and tags["mlflow.source.type"] == "LOCAL"
    assert tags.get("mlflow.source.git.commit", "unknown") == tags["git.commit"]
