"""Shared fixtures. Tests run on CPU; the real datasets in ../shared/datasets are used when present."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import sparsebench.methods as methods
from sparsebench.methods import DataConfig, RunConfig, load_dataset

SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


@pytest.fixture(autouse=True)
def _deterministic_threads():
    # Bit-identical comparisons need the same intra-op thread count on both sides of a comparison.
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="session")
def digits():
    return load_dataset(DataConfig(dataset="digits"))


@pytest.fixture
def shared_datasets() -> Path:
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"{SHARED_DATASETS} not present (real data files are only on the developers' machines)")
    return SHARED_DATASETS


def small_config(method: str, **flat) -> RunConfig:
    """A fast config of `method` on digits, with dropout where the model has it (exercises the RNG)."""
    base = {"method": method, "train.epochs": 4, "train.batch_size": 64, "train.lr": 0.05}
    model_keys = methods.get_method(method).Config.keys()
    if "dropout" in model_keys:
        base["model.dropout"] = 0.1
    if "hidden" in model_keys:
        base["model.hidden"] = [32, 16]
    if "prune_start" in model_keys:  # a pruning round must fit before the last epoch
        base["model.prune_start"] = 1
    if "retrain_fraction" in model_keys:  # spectral_filter: 2 eigenvalue-only epochs, then 2 of the smaller net
        base["model.retrain_fraction"] = 0.5
    if method in ("spectral", "spectral_sparse", "dense_sparse", "spectral_filter"):
        # The authors train these with Adamax / Adam (Example/lessparam_functions.py, sparse_functions.py) on one
        # wide hidden layer; plain SGD barely moves the small eigenvalue products in the 2-4 epochs a test has. QR
        # learns fastest of the variants on digits; tests/test_spectral_methods.py checks every variant learns.
        base.update({"train.optimizer": "adamax", "train.lr": 0.05, "train.batch_size": 16, "model.hidden": [256]})
        if method == "spectral":
            base["model.variant"] = "qr"
    if "sparsity" in model_keys:
        base["model.sparsity"] = 0.5
    if "frequency" in model_keys:  # lp_sphere: topology updates every 10 steps (22 steps per digits epoch here)
        base["model.frequency"] = 10
    return RunConfig.from_flat({**base, **flat})


@pytest.fixture
def in_tmp_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return tmp_path


STALE_CLUSTER = "127.0.0.1:1"  # where nothing answers


@pytest.fixture
def ray_session(monkeypatch):
    """An in-process search that starts its own local Ray, shut down afterwards. The machine is made to look as if
    an earlier `ray start` had left /tmp/ray/ray_current_cluster behind (ray.init() with no address connects to
    it: ray/_private/services.py get_ray_address_from_environment), as the loopback-cluster tests can: a local
    run must start its own instance regardless (CI failed on this, stop 25)."""
    import ray._private.utils
    monkeypatch.setattr(ray._private.utils, "read_ray_address", lambda temp_dir=None: STALE_CLUSTER)
    yield
    import ray
    ray.shutdown()


def assert_refused(code: int, err: str, message: str, folder) -> None:
    """A bad input's refusal (the house rule): exit 2, one line naming the value, no Ray, nothing written."""
    import ray
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("sparsebench: error: "), err
    assert message in err
    assert not ray.is_initialized()
    assert list(folder.iterdir()) == []  # no mlflow.db, no ray_results: nothing started, nothing written


def assert_resume_identical(cfg: RunConfig, data, path: Path, after: int) -> None:
    """Trained straight through, or saved after `after` epochs and resumed in a fresh Trainer: the same history
    (every metric of every epoch, bit for bit; only the wall-clock seconds differ)."""
    from sparsebench.methods import Trainer
    full = Trainer(cfg, data=data).fit()
    part = Trainer(cfg, data=data)
    for _ in range(after):
        part.run_epoch()
    part.save(path)
    resumed = Trainer(cfg, data=data)
    resumed.load(path)
    rest = resumed.fit()
    strip = lambda h: [{k: v for k, v in m.items() if k != "seconds"} for m in h]  # noqa: E731
    assert strip(rest) == strip(full)
