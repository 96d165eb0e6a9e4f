"""A new SQLite MLflow store copied from a template instead of built by MLflow's schema migrations.

MLflow builds a new SQLite store by creating its first tables and then running every alembic revision since
(mlflow/store/db/utils.py, `_initialize_tables`): about 100 migrations, 2-3 s of CPU on an idle core, paid by
every new study folder and by every test that starts from an empty folder. The template is that same store,
made once per MLflow version by MLflow itself in a cache folder, with one change: its Default experiment is
removed. MLflow records that experiment's artifact location from the working directory of whoever opens the
store first, and creates experiment 0 itself whenever it is missing (SqlAlchemyStore._initialize_store_state),
so a copy opened anywhere becomes exactly the store MLflow would have made there (tests/test_sqlite_seed.py
compares the schema, the rows and the Default experiment).

The cache folder is $SPARSEBENCH_CACHE, else $XDG_CACHE_HOME/sparsebench, else ~/.cache/sparsebench. Any failure
to make or copy the template leaves the store to MLflow, the slow way.
"""
from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException

PREFIX = "sqlite:///"


def cache_dir() -> Path:
    if os.environ.get("SPARSEBENCH_CACHE"):
        return Path(os.environ["SPARSEBENCH_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sparsebench"


def template() -> Path:
    """The empty store of this MLflow version (made here the first time, atomically)."""
    path = cache_dir() / f"mlflow-{mlflow.__version__}-empty.sqlite"
    if path.is_file():
        return path
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as d:
        db = Path(d) / "store.sqlite"
        SqlAlchemyStore(f"{PREFIX}{db}", str(Path(d) / "artifacts")).engine.dispose()
        with sqlite3.connect(db) as c:
            c.execute("DELETE FROM experiments")  # the Default experiment; a fresh store has no other row of it
        c.close()
        os.replace(db, path)  # atomic: a process building the same template at once writes the same bytes
    return path


def seed(uri: str) -> None:
    """Where `uri` is sqlite:///<file> in an existing folder and the file does not exist, copy the template there.
    An existing file is never touched; another process creating it at the same moment wins."""
    if not uri.startswith(PREFIX):
        return
    path = Path(uri[len(PREFIX):])
    if path.exists() or not path.parent.is_dir():
        return  # an existing store, or a URI the callers' checks refuse
    try:
        source = template()
        tmp = path.with_name(f".{path.name}.{os.getpid()}.seed")
        shutil.copyfile(source, tmp)
    except (OSError, sqlite3.Error, MlflowException):
        return
    try:
        os.link(tmp, path)  # never replaces a file that appeared meanwhile
    except OSError:
        pass  # it exists now, or the filesystem has no hard links: MLflow creates the store itself
    finally:
        tmp.unlink(missing_ok=True)
