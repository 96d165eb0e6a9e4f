"""Optuna studies kept in an SQL storage beside the MLflow store (issue 16, item 5; workflows/optuna_store.py): where
the default lies, bad URLs refused before anything starts, a search's study readable from the database with one
trial per Tune trial and its values, a stale study replaced, and a checkpointed searcher that continues the same
study."""
from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from sparsebench.workflows import optuna_store, tracking
from sparsebench.workflows.cli import main
from sparsebench.workflows.search import SearchSettings, plan, search_and_schedule, study_name
from sparsebench.workflows.search_space import load_search_space

from .conftest import assert_refused


def test_the_default_lies_beside_a_sqlite_store_else_in_tunes_folder(tmp_path):
    store = f"sqlite:///{tmp_path / 'a' / 'mlflow.db'}"
    assert optuna_store.default_url(store, str(tmp_path / "ray")) == f"sqlite:///{tmp_path / 'a' / 'optuna.db'}"
    server = "http://127.0.0.1:5000"
    assert optuna_store.default_url(server, str(tmp_path / "ray")) == f"sqlite:///{tmp_path / 'ray' / 'optuna.db'}"
    assert optuna_store.default_url(server, "s3://bucket/ray") == "none"       # no local folder to trust
    s = SearchSettings(methods=("dense",), tracking_uri=store, optuna_storage="sqlite:///rel.db")
    assert s.optuna_url == f"sqlite:///{Path.cwd() / 'rel.db'}"   # absolute: a restored searcher reopens it by URL
    assert SearchSettings(methods=("dense",), optuna_storage="none").optuna_url == "none"


def _not_sqlite(folder):
    path = folder.parent / f"{folder.name}-notes.txt"
    path.write_text("not a database\n")
    return f"sqlite:///{path}", f"{path} is not an SQLite database"


@pytest.mark.parametrize("make", [
    lambda f: ("ftp://host/optuna", "--optuna-storage ftp://host/optuna: not a database URL; allowed: sqlite://..., "
                                    "postgresql://..., mysql://... or none"),
    lambda f: ("optuna.db", "--optuna-storage optuna.db: not a database URL"),
    lambda f: (f"sqlite:///{f.parent / 'no-such-folder' / 'o.db'}", f"folder {f.parent / 'no-such-folder'} does not exist"),
    lambda f: (f"sqlite:///{f.parent}", f"{f.parent} is a folder, not an SQLite database"),
    _not_sqlite,
], ids=["scheme", "bare-path", "missing-folder", "a-folder", "not-sqlite"])
def test_a_bad_storage_exits_2_with_one_line_and_nothing_written(make, capsys, in_tmp_cwd):
    url, message = make(in_tmp_cwd)
    code = main(["search", "--methods", "dense", "--optuna-storage", url])
    assert_refused(code, capsys.readouterr().err, message, in_tmp_cwd)


def test_a_search_keeps_its_study_in_the_database_and_replaces_a_stale_one(in_tmp_cwd, ray_session, capsys):
    s = SearchSettings(methods=("dense",), num_samples=3, epochs=2, max_concurrent=2, seed=5)
    name = plan(s)[0].name
    url = f"sqlite:///{in_tmp_cwd / 'optuna.db'}"
    assert s.optuna_url == url
    # A study of the same name left by a search whose Tune folder is gone: not this search's trials.
    stale = optuna.create_study(study_name=name, storage=url, direction="maximize")
    stale.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=0.123))
    argv = ["search", "--methods", "dense", "--num-samples", "3", "--epochs", "2", "--max-concurrent", "2",
            "--seed", "5"]
    assert main(argv) == 0
    capsys.readouterr()
    study = optuna.load_study(study_name=name, storage=url)
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(study.trials) == len(done) == 3 and 0.123 not in [t.value for t in done]
    # Each Optuna trial's value is the val_acc its MLflow run ended with (ASHA-stopped trials: at their last epoch).
    client = MlflowClient(tracking_uri=s.uri)
    exp = client.get_experiment_by_name("search/digits")
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`{tracking.TAG_KIND}` = 'trial'")
    assert sorted(t.value for t in done) == sorted(r.data.metrics["val_acc"] for r in runs)
    assert all(set(t.params) >= {"train.lr"} for t in done)        # the sampled hyperparameters, by their keys
    # The same command again restores the Tune experiment and leaves the study as it was.
    assert main(argv) == 0
    assert "restoring study" in capsys.readouterr().out
    assert len(optuna.load_study(study_name=name, storage=url).trials) == 3


def test_with_none_the_study_stays_in_memory(in_tmp_cwd):
    s = SearchSettings(methods=("dense",), optuna_storage="none")
    assert optuna_store.storage(s.optuna_url, "x", fresh=True) is None
    assert list(in_tmp_cwd.iterdir()) == []


@pytest.mark.parametrize("objective", ["val_acc", "pareto"])
def test_a_checkpointed_searcher_continues_the_same_database_study(objective, tmp_path):
    """What Tune does on a rerun: save the searcher with its experiment, restore it in a new driver."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    s = SearchSettings(methods=("dense",), objective=objective, epochs=3, seed=1, optuna_storage=url)
    base = {"method": "dense", "data.dataset": "digits", "train.epochs": 3, "train.seed": 1}
    space = load_search_space("dense").define_by_run(base)
    name = study_name("dense", load_search_space("dense"), base, s)
    searcher, _ = search_and_schedule(space, name, s, optuna_store.storage(url, name, fresh=True))
    searcher._setup_study(searcher.mode)
    for i in range(3):
        cfg = searcher.suggest(f"t{i}")
        assert cfg
        result = {"val_acc": 0.5 + 0.1 * i, "params_trainable": 1000.0 * (i + 1), "training_iteration": 3}
        searcher.on_trial_complete(f"t{i}", result)
    searcher.save(str(tmp_path / "searcher.pkl"))
    nxt = searcher.suggest("t3")
    again, _ = search_and_schedule(space, name, s)          # as Tune builds it before restoring
    again.restore(str(tmp_path / "searcher.pkl"))
    assert again.suggest("t3") == nxt                       # the same sampler state over the same finished trials
    trials = optuna.load_study(study_name=name, storage=url).trials
    assert [t.state for t in trials[:3]] == [optuna.trial.TrialState.COMPLETE] * 3
    assert len(trials) == 5                                 # both drivers' t3 asked the database for a trial


def test_a_default_in_tunes_folder_to_be_is_accepted_and_made_when_the_study_opens(tmp_path):
    url = optuna_store.default_url("http://127.0.0.1:5000", str(tmp_path / "ray_results"))
    optuna_store.check(url, given=False)                     # Tune makes the folder; check_storage vouches for it
    with pytest.raises(tracking.StoreError, match="ray_results does not exist"):
        optuna_store.check(url, given=True)                  # a URL the user typed must point at a folder there is
    assert not (tmp_path / "ray_results").exists()
    optuna_store.storage(url, "s", fresh=True)
    assert (tmp_path / "ray_results" / "optuna.db").read_bytes()[:16] == b"SQLite format 3\x00"
