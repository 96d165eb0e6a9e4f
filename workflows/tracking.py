"""Every MLflow convention of sparsebench (docs/design.md, "MLflow layout"; docs/tracking.md).

- experiment = a study, e.g. `search/digits`; one parent run per (method, setting), found again by its tag
  `sparsebench.study` so that a rerun of the same command continues it instead of adding another;
- one child run per trial (tag `mlflow.parentRunId`), found again by `sparsebench.trial_id`;
- experiments and parent runs are created by the driver before trials start; trials never touch MLflow:
  their results reach the driver through Tune, and `MlflowTrialCallback` (running in the driver) is the only
  writer. This keeps SQLite (one writer at a time) safe and costs no extra transfer.
- every run logs its config (params), git commit + dirty flag, package versions, command line, dataset name
  and checksum, and hardware; every trial run logs its data as an MLflow dataset input (`dataset_input`).
"""
from __future__ import annotations

import logging
import os
import platform
import subprocess
import sys
import time
from collections import Counter
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from .errors import StoreError
from .hardware import hardware
from .sqlite_seed import seed
from .system_metrics import PREFIX as SYSTEM_PREFIX

TAG_STUDY = "sparsebench.study"
TAG_TRIAL = "sparsebench.trial_id"
TAG_KIND = "sparsebench.kind"  # parent | trial | comparison (workflows/comparison.py)
TAG_CELL = "cell.key"  # a final-stage run's cell (workflows/reproduce.py cell_key)
PARENT_TAG = "mlflow.parentRunId"
PACKAGES = ("torch", "ray", "optuna", "mlflow", "pandas", "numpy", "scikit-learn", "scipy", "sparsebench")
_MAX_BATCH = 900  # MLflow accepts 1000 metrics per log_batch call


def default_tracking_uri() -> str:
    """`$MLFLOW_TRACKING_URI`, else SQLite `mlflow.db` in the working directory (absolute, for Ray workers)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


_SCHEMES = ("sqlite", "http", "https", "file", "postgresql", "mysql", "mssql", "databricks")


def _head(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(16)


def check_store(uri: str, must_exist: bool = False) -> None:
    """Open the MLflow store once, so that a wrong URI fails with one line before anything starts."""
    scheme = uri.split(":", 1)[0].split("+", 1)[0] if "://" in uri else "file"
    if scheme not in _SCHEMES:
        raise StoreError(f"--tracking-uri {uri}: unsupported scheme {scheme!r}; use one of {', '.join(_SCHEMES)}")
    if scheme == "sqlite":
        path = Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None
        if path is None:
            raise StoreError(f"--tracking-uri {uri}: expected sqlite:///<path to a database file>")
        if must_exist and not path.is_file():
            raise StoreError(f"--tracking-uri {uri}: no MLflow database there; run 'sparsebench search' or 'sparsebench demo' first")
        if path.exists() and (path.is_dir() or _head(path) not in (b"", b"SQLite format 3\x00")):
            raise StoreError(f"--tracking-uri {uri}: {path} is not an SQLite database")
        if not path.parent.is_dir():
            raise StoreError(f"--tracking-uri {uri}: folder {path.parent} does not exist")
    try:
        client(uri).search_experiments(max_results=1)
    except Exception as e:  # noqa: BLE001 - any failure to open the store is the user's URI, reported in one line
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise StoreError(f"--tracking-uri {uri}: cannot open the MLflow store ({first})") from None


def client(uri: str) -> MlflowClient:
    seed(uri)  # a new SQLite store from the migrated template (workflows/sqlite_seed.py)
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri)


# The MLflow 3 UI opens an experiment by this tag: "custom_model_development" is the model-training runs table,
# "genai_development" the Traces/Judges view (the values of mlflow's ExperimentKind in its UI code and its
# mlflow-onboarding skill, mlflow/assistant/skills/mlflow-onboarding/SKILL.md). Untagged, the UI guesses.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"


# ... but the MLflow 3.17 UI no longer reads that tag: its OSS build takes the view from one global switch (GenAI |
# Model training), from the page address's `workflowType` or else the browser's last choice (localStorage
# "mlflow.workflowType", GenAI at first; mlflow/server/js main bundle, the workflowType provider). A link with
# the parameter opens an experiment on its runs table.
UI_WORKFLOW = "machine_learning"


def ui_route(experiment_id: str) -> str:
    """The MLflow UI's address of an experiment's runs table, after `http://HOST:PORT/`."""
    return f"#/experiments/{experiment_id}?workflowType={UI_WORKFLOW}"


def get_or_create_experiment(c: MlflowClient, name: str) -> str:
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            c.restore_experiment(exp.experiment_id)
        if EXPERIMENT_KIND_TAG not in exp.tags:  # made by an older sparsebench; a kind the user chose is kept
            c.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return exp.experiment_id
    return c.create_experiment(name, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})


def _git_info() -> dict[str, str]:
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10)
        if commit.returncode == 0:
            return {"git.commit": commit.stdout.strip(), "git.dirty": str(bool(status.stdout.strip())).lower()}
    except (OSError, subprocess.SubprocessError):
        pass
    return {"git.commit": "unknown", "git.dirty": "unknown"}


def _versions() -> dict[str, str]:
    out = {"version.python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[f"version.{p}"] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[f"version.{p}"] = "not installed"
    return out


def env_tags() -> dict[str, str]:
    tags = {**_git_info(), **_versions(), "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:5000]}
    # MLflow's own source tags (mlflow/utils/mlflow_tags.py MLFLOW_SOURCE_NAME, MLFLOW_SOURCE_TYPE,
    # MLFLOW_GIT_COMMIT), which the UI's Source column and run page read: the command and the commit.
    tags.update({"mlflow.source.name": tags["command"], "mlflow.source.type": "LOCAL"})
    if tags["git.commit"] != "unknown":
        tags["mlflow.source.git.commit"] = tags["git.commit"]
    tags.update({f"driver.{k}": v for k, v in hardware().items()})
    return tags


def find_run(c: MlflowClient, experiment_id: str, tags: dict[str, str]) -> Any | None:
    flt = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    runs = c.search_runs([experiment_id], filter_string=flt, max_results=2, order_by=["attributes.start_time DESC"])
    return runs[0] if runs else None


def start_parent_run(c: MlflowClient, experiment_id: str, study: str, run_name: str, tags: dict[str, str],
                     params: dict[str, Any], kind: str = "parent") -> str:
    """The parent run of a study (or of a comparison of studies, kind="comparison"), created once; a rerun of the
    same study reopens it (status RUNNING)."""
    found = find_run(c, experiment_id, {TAG_STUDY: study, TAG_KIND: kind})
    if found is not None:
        c.update_run(found.info.run_id, status="RUNNING")
        return found.info.run_id
    run = c.create_run(experiment_id, run_name=run_name,
                       tags={TAG_STUDY: study, TAG_KIND: kind, **env_tags(), **tags})
    log_params(c, run.info.run_id, params)
    return run.info.run_id


def log_params(c: MlflowClient, run_id: str, params: dict[str, Any]) -> None:
    items = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
    for i in range(0, len(items), 90):  # MLflow: at most 100 params per batch
        c.log_batch(run_id, params=items[i:i + 90])


def numeric_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The per-epoch numbers of a Tune result (Tune adds its own bookkeeping keys, which are dropped)."""
    from sparsebench.methods.core.metrics import EPOCH_KEYS

    # budget_feasible: workflows/budgets.py; system/*: what the trial used of its node (workflows/system_metrics.py)
    return {k: float(v) for k, v in result.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
            and (k in EPOCH_KEYS or k.startswith(("layer", SYSTEM_PREFIX)) or k in ("lr", "budget_feasible"))}


def epoch_metrics(values: dict[str, float], step: int) -> list[Metric]:
    now = int(time.time() * 1000)
    return [Metric(k, v, now, step) for k, v in sorted(values.items())]


def log_metric_list(c: MlflowClient, run_id: str, metrics: list[Metric]) -> None:
    for i in range(0, len(metrics), _MAX_BATCH):
        c.log_batch(run_id, metrics=metrics[i:i + _MAX_BATCH])


def log_pruning_curve(c: MlflowClient, run_id: str, curve: dict[str, list], title: str) -> None:
    """A post-training pruning curve (methods/nn/node_pruning.py) as metrics `pruned_<split>_acc` with the removed
    percentage as their step (the MLflow UI plots them against it), a table and a PNG plot."""
    import pandas as pd

    from .plots import pruning_curve_figure

    frame = pd.DataFrame(curve)
    cols = [col for col in frame.columns if col.endswith("_acc")]
    # Idempotent, so that a driver restarted between this and the epoch's metrics may log it again: metrics
    # only if absent, artifacts overwritten (log_dict / log_text / log_figure replace a file; log_table appends).
    if not c.get_metric_history(run_id, f"pruned_{cols[0]}"):
        now = int(time.time() * 1000)
        log_metric_list(c, run_id, [Metric(f"pruned_{col}", float(v), now, int(q))
                                    for col in cols for q, v in zip(frame["percent"], frame[col])])
    c.log_dict(run_id, {"columns": list(frame.columns), "data": frame.values.tolist()}, "pruning_curve.json")
    c.log_text(run_id, frame.to_csv(index=False), "pruning_curve.csv")
    c.log_figure(run_id, pruning_curve_figure(frame, title), "pruning_curve.png")


def last_logged_epoch(c: MlflowClient, run_id: str) -> int:
    hist = c.get_metric_history(run_id, "epoch")
    return int(max((m.value for m in hist), default=0))


def children(c: MlflowClient, experiment_id: str, parent_run_id: str, status: str | None = None, where: str = ""):
    """The parent's child runs, newest first; optionally of one status and with an extra filter clause."""
    flt = f"tags.`{PARENT_TAG}` = '{parent_run_id}'" + (f" and attributes.status = '{status}'" if status else "")
    return c.search_runs([experiment_id], filter_string=flt + (f" and {where}" if where else ""), max_results=50000,
                         order_by=["attributes.start_time DESC"])


def close_open_children(c: MlflowClient, experiment_id: str, parent_run_id: str, status: str,
                        only: Callable[[Any], bool] | None = None) -> tuple[int, Counter]:
    """Mark the parent's child runs still RUNNING with `status` (only those `only(run)` accepts, e.g. one driver's
    own cells). Returns how many there were and the count of every child's status afterwards (one query for both)."""
    closed = 0
    statuses: Counter = Counter()
    for r in children(c, experiment_id, parent_run_id):
        if r.info.status == "RUNNING" and (only is None or only(r)):
            c.set_terminated(r.info.run_id, status=status)
            closed += 1
            statuses[status] += 1
        else:
            statuses[r.info.status] += 1
    return closed, statuses


DATASET_CONTEXT = "train"  # mlflow.data.context: the data the run trained (and validated and tested) on


def dataset_input(described: str):
    """An MLflow dataset input (the UI's Dataset column) from `trainable.dataset_description`: name, digest (the
    sha256 of the arrays as loaded, methods/data/splits.py arrays_checksum), source (the file, or the built-in
    set's provenance), schema (TensorSpecs as mlflow.data.from_numpy writes them) and profile (split sizes)."""
    import json

    import numpy as np
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.types.schema import Schema, TensorSpec

    d = json.loads(described)
    features = Schema([TensorSpec(np.dtype(np.float32), (-1, *d["input_shape"]))]).to_json()
    targets = Schema([TensorSpec(np.dtype(np.int64), (-1,))]).to_json()
    schema = json.dumps({"mlflow_tensorspec": {"features": features, "targets": targets}})
    profile = json.dumps({k: d[k] for k in ("n_train", "n_val", "n_test", "num_classes", "checksum")})
    if d["path"]:
        source_type, source = "local", json.dumps({"uri": d["path"], **({"test_uri": d["test_path"]} if d["test_path"] else {})})
    else:
        source_type, source = "code", json.dumps({"tags": {"sparsebench.dataset": d["name"], "provenance": d["source"]}})
    # MLflow's own digests are 8-10 hex characters (its SQL column holds at most 36); 16 of the sha256 here.
    return DatasetInput(Dataset(d["name"], d["checksum"][:16], source_type, source, schema, profile),
                        tags=[InputTag("mlflow.data.context", DATASET_CONTEXT)])


def log_dataset_input(c: MlflowClient, run_id: str, described: str) -> None:
    c.log_inputs(run_id, datasets=[dataset_input(described)])


def set_tags(c: MlflowClient, run_id: str, tags: dict[str, str]) -> None:
    c.log_batch(run_id, tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()])


MODEL_NAME = "model"   # runs:/<run id>/model


def log_model(uri: str, run_id: str, model, example, config: dict[str, Any]) -> None:
    """A trained network as the run's MLflow PyTorch model `model`, so that `mlflow.pytorch.load_model(
    "runs:/<run id>/model")` returns it: signature and input example from `example` (the first test inputs as the
    run's network saw them), the run's flat config in the model's metadata (`sparsebench_config`, from which
    methods.core.train.evaluation_data rebuilds the inputs the run was measured on; docs/tracking.md)."""
    import torch
    from mlflow.models import infer_signature

    model.eval()
    with torch.no_grad():
        out = model(example)
    signature = infer_signature(example.numpy(), out.numpy())
    mlflow.set_tracking_uri(uri)
    quiet = logging.getLogger("mlflow.pytorch")   # its warning on pickle, chosen here on purpose (below)
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        _log_pytorch_model(run_id, model, example, signature, config)
    finally:
        quiet.setLevel(level)


def _log_pytorch_model(run_id: str, model, example, signature, config: dict[str, Any]) -> None:
    import mlflow.pytorch

    # Fluent, inside the run: MLflow 3 files the LoggedModel under the active run's experiment (with only run_id
    # it would land in the default experiment; mlflow/tracking/fluent.py _create_logged_model).
    with mlflow.start_run(run_id=run_id, log_system_metrics=False):
        mlflow.pytorch.log_model(
            model, name=MODEL_NAME, signature=signature, input_example=example.numpy(),
            # Pickle, not MLflow 3's default pt2 (torch.export): it returns the module itself, any batch size, and
            # exports no graph of the CSR kernels of methods/nn/sparse_linear.py. Loading needs sparsebench.
            serialization_format="pickle",
            # Given, not inferred: inference loads the model once more in a subprocess, seconds per run.
            pip_requirements=[f"torch=={metadata.version('torch').split('+')[0]}",
                              f"sparsebench=={metadata.version('sparsebench')}"],
            metadata={"sparsebench_config": config})
