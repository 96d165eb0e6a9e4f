"""Where the Optuna studies of a search are kept (issue 16, item 5): an SQL storage beside the MLflow store, so that
`optuna-dashboard <url>` shows every study's trials, their parameters, values and the Pareto fronts.

The default is `optuna.db` in the folder of a SQLite MLflow store (`mlflow.db`); with an MLflow server or another
database it is `optuna.db` in Tune's local storage folder (the folder that makes a rerun resume, so it persists
wherever the driver does, also under `ray job submit`); with remote Tune storage (s3://, gs://) there is no local
folder to trust and the studies stay in memory unless `--optuna-storage` names a database. `none` keeps them in
memory (Optuna's default, and this project's before item 5).

Only the driver writes it: Ray Tune's OptunaSearch runs in the Tune controller, not in the trials
(ray/tune/search/optuna/optuna_search.py), so SQLite's single writer is enough even on a cluster. An Optuna study
mirrors its Tune experiment: a rerun that restores the Tune experiment restores the searcher from Tune's checkpoint,
which holds the same study (optuna's RDBStorage pickles as its URL); a fresh Tune experiment of a name the database
already has (its Tune folder was deleted) starts its study afresh rather than inherit trials Tune no longer knows.
"""
from __future__ import annotations

from pathlib import Path

from .tracking import StoreError

NONE = "none"
FILE = "optuna.db"
SCHEMES = ("sqlite", "postgresql", "mysql")   # SQLAlchemy dialects optuna's RDBStorage documents
_SQLITE = "sqlite:///"


def default_url(tracking_uri: str, storage_path: str) -> str:
    """The storage a search uses when --optuna-storage is not given (module docstring)."""
    if tracking_uri.startswith(_SQLITE):
        folder = Path(tracking_uri[len(_SQLITE):]).parent
    elif "://" not in storage_path:
        folder = Path(storage_path)
    else:
        return NONE
    return _SQLITE + str((folder / FILE).resolve())


def resolve(setting: str, tracking_uri: str, storage_path: str) -> str:
    """The URL of `setting` (a database URL, `none`, or empty for the default), a SQLite path made absolute."""
    url = setting or default_url(tracking_uri, storage_path)
    if url.startswith(_SQLITE):
        return _SQLITE + str(Path(url[len(_SQLITE):]).resolve())
    return url


def check(url: str, given: bool = True) -> None:
    """One line naming the value when `url` cannot hold the studies; opens and creates nothing. A default URL
    (`given` False) may lie in a folder still to be made: Tune's storage folder, checked by runner.check_storage, or
    the MLflow store's, checked by tracking.check_store."""
    if url == NONE:
        return
    scheme = url.split("://", 1)[0].split("+", 1)[0] if "://" in url else ""
    if scheme not in SCHEMES:
        raise StoreError(f"--optuna-storage {url}: not a database URL; allowed: "
                         f"{', '.join(s + '://...' for s in SCHEMES)} or {NONE}")
    if scheme != "sqlite":
        return   # a server database: the driver reports a refused connection when the first study opens
    if not url.startswith(_SQLITE) or url == _SQLITE:
        raise StoreError(f"--optuna-storage {url}: expected sqlite:///<path to a database file>")
    path = Path(url[len(_SQLITE):])
    if path.is_dir():
        raise StoreError(f"--optuna-storage {url}: {path} is a folder, not an SQLite database")
    if path.exists():
        with open(path, "rb") as f:
            if f.read(16) not in (b"", b"SQLite format 3\x00"):
                raise StoreError(f"--optuna-storage {url}: {path} is not an SQLite database")
    elif given and not path.parent.is_dir():
        raise StoreError(f"--optuna-storage {url}: folder {path.parent} does not exist")


def storage(url: str, study_name: str, fresh: bool):
    """The optuna RDBStorage of `url` (None for `none`: in memory); `fresh` deletes a study of that name first."""
    if url == NONE:
        return None
    import optuna

    if url.startswith(_SQLITE):
        Path(url[len(_SQLITE):]).parent.mkdir(parents=True, exist_ok=True)   # a default in Tune's folder-to-be
    st = optuna.storages.RDBStorage(url)
    if fresh and study_name in {s.study_name for s in optuna.get_all_study_summaries(st, include_best_trial=False)}:
        optuna.delete_study(study_name=study_name, storage=st)
    return st
