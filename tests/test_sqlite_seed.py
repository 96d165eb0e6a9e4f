"""A new SQLite store seeded from the template (workflows/sqlite_seed.py) is the store MLflow makes itself."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from sparsebench.workflows import sqlite_seed, tracking


def _schema(db: Path) -> dict:
    """Every table, index and trigger with its definition's clauses as a set: alembic's batch migrations write a
    table's CHECK constraints in an order that varies between processes (two stores MLflow makes differ so)."""
    with sqlite3.connect(db) as c:
        rows = c.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall()
    return {(t, n, tb): frozenset(line.strip().rstrip(",") for line in (sql or "").splitlines()) for t, n, tb, sql in rows}


def _rows(db: Path) -> dict:
    with sqlite3.connect(db) as c:
        tables = [t for (t,) in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: sorted(c.execute(f'SELECT * FROM "{t}"').fetchall(), key=str) for t in tables}


def _without_times(rows: dict) -> dict:
    # experiments: (id, name, artifact_location, lifecycle_stage, creation_time, last_update_time, workspace)
    return {**rows, "experiments": [r[:4] + r[6:] for r in rows["experiments"]]}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_a_seeded_store_equals_the_store_mlflow_makes(tmp_path, cache, monkeypatch):
    here = tmp_path / "work"
    here.mkdir()
    monkeypatch.chdir(here)  # the Default experiment's artifact location comes from the working directory
    made, seeded = here / "made.db", here / "seeded.db"
    MlflowClient(tracking_uri=f"sqlite:///{made}").search_experiments()      # MLflow's own migrations
    c = tracking.client(f"sqlite:///{seeded}")                               # the template's copy
    exps = c.search_experiments()
    assert [p.name for p in cache.iterdir()] == [f"mlflow-{mlflow.__version__}-empty.sqlite"]  # made, and used
    assert _schema(seeded) == _schema(made)
    assert _without_times(_rows(seeded)) == _without_times(_rows(made))
    assert [(e.experiment_id, e.name, e.artifact_location) for e in exps] == [("0", "Default", str(here / "mlruns" / "0"))]
    exp = tracking.get_or_create_experiment(c, "search/digits")
    run = c.create_run(exp)
    c.log_metric(run.info.run_id, "val_acc", 0.5)
    assert c.get_run(run.info.run_id).data.metrics == {"val_acc": 0.5}


def test_an_existing_file_is_never_replaced_and_other_uris_are_left_alone(tmp_path, cache):
    existing = tmp_path / "mine.db"
    existing.write_bytes(b"")
    sqlite_seed.seed(f"sqlite:///{existing}")
    assert existing.read_bytes() == b""
    sqlite_seed.seed(f"sqlite:///{tmp_path / 'missing-folder' / 'x.db'}")   # refused later by the callers' checks
    sqlite_seed.seed("http://127.0.0.1:5000")
    sqlite_seed.seed(f"file://{tmp_path / 'mlruns'}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.db"]        # no store, no template made
    assert not cache.exists()


def test_an_unusable_cache_leaves_the_store_to_mlflow(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("SPARSEBENCH_CACHE", str(blocker / "cache"))
    db = tmp_path / "store.db"
    sqlite_seed.seed(f"sqlite:///{db}")
    assert not db.exists()
    assert [e.name for e in tracking.client(f"sqlite:///{db}").search_experiments()] == ["Default"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not-a-folder", "store.db"]
