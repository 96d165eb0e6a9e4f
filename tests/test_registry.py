"""Every registered method gets these checks for free (timm's registry-parameterized tests)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sparsebench.methods import RunConfig, Trainer, get_method, list_methods
from sparsebench.methods.nn.layers import weight_layers
from sparsebench.methods.core.config import ConfigError
from sparsebench.methods.core.metrics import EPOCH_KEYS
from sparsebench.methods.nn.spectral_layers import SpectralLinear

from .conftest import assert_resume_identical, small_config

METHODS = list_methods()


def test_registry_is_not_empty():
    assert "dense" in METHODS


@pytest.mark.parametrize("method", METHODS)
def test_forward_shape(method, digits):
    tr = Trainer(small_config(method), data=digits)
    out = tr.model(digits.x_test[:7])
    assert out.shape == (7, digits.info.num_classes)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("method", METHODS)
def test_one_step_lowers_loss_on_fixed_batch(method, digits):
    tr = Trainer(small_config(method, **{"train.lr": 0.01, "train.momentum": 0.0}), data=digits)
    xb, yb = digits.x_train[:256], digits.y_train[:256]
    tr.model.eval()  # no dropout noise in the before/after comparison
    with torch.no_grad():
        before = F.cross_entropy(tr.model(xb), yb).item()
    tr.model.train()
    tr.train_step(xb, yb)
    tr.model.eval()
    with torch.no_grad():
        after = F.cross_entropy(tr.model(xb), yb).item()
    assert after < before, (before, after)


@pytest.mark.parametrize("method", METHODS)
def test_every_metric_key_present_and_sane(method, digits):
    tr = Trainer(small_config(method, **{"train.epochs": 2}), data=digits)
    hist = []
    for _ in range(2):
        hist.append(tr.run_epoch())
        m = hist[-1]
        # A layer trains at most its weights, plus one eigenvalue per node on each side for a full spectral layer;
        # normalisation layers (lp methods' BatchNorm) are trained but not part of params_dense.
        eigenvalues = sum(l.in_features + l.out_features for l in weight_layers(tr.model) if isinstance(l, SpectralLinear))
        norms = sum(p.numel() for mod in tr.model.modules() if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm)
                    for p in mod.parameters())
        assert 0 < m["params_trainable"] <= m["params_dense"] + eigenvalues + norms
    assert [m["epoch"] for m in hist] == [1, 2]
    for m in hist:
        missing = set(EPOCH_KEYS) - set(m)
        assert not missing, missing
        for k in ("train_acc", "val_acc", "test_acc", "weight_sparsity", "neuron_sparsity", "hoyer", "act_corr",
                  "weight_cos"):
            assert 0.0 <= m[k] <= 1.0, (k, m[k])
        assert math.isfinite(m["train_loss"]) and m["train_loss"] > 0
        assert 0 < m["weights_nonzero"] <= m["params_dense"]
        # Network totals are the sums of the per-layer values reported beside them.
        assert m["neurons_active"] == sum(v for k, v in m.items() if k.endswith("/neurons_active"))
        assert m["weights_nonzero"] == sum(v for k, v in m.items() if k.endswith("/weights_nonzero"))
        assert m["dead_units"] == sum(v for k, v in m.items() if k.endswith("/dead_units"))
    assert hist[1]["seconds"] > hist[0]["seconds"] > 0
    # Learning happened: after 2 epochs the model beats chance (10 classes) on held-out data. Twice chance: on these
    # 2 epochs the ER methods' val_acc spreads over 0.20-0.52 across seeds 0-4 (set_neuron seed 0: 0.25).
    assert hist[-1]["val_acc"] > 0.2


def _accepts(method: str, overrides: dict) -> bool:
    try:
        RunConfig.from_flat({**small_config(method).flat(), **overrides})
    except ConfigError:
        return False
    return True


def _resume_variants() -> list:
    """Every method as the tests configure it; the ones with a truly sparse layer (model.sparse_compute) also on
    it; and every method sized to a budget by its own hook (the configurations a budget search trains)."""
    out = []
    for m in METHODS:
        out.append(pytest.param(m, {}, id=m))
        # epsilon 1: the small test shapes stay below the density where sparse storage outgrows dense (refused)
        sparse = {"model.sparse_compute": "sparse", "model.epsilon": 1.0}
        if _accepts(m, sparse):
            out.append(pytest.param(m, sparse, id=f"{m}-sparse"))
        out.append(pytest.param(m, "budget", id=f"{m}-budget"))
    return out


def test_the_resume_check_covers_every_truly_sparse_method():
    # _accepts drops a variant the config refuses: a refusal of the test's shape must not drop the check silently.
    ids = {p.id for p in _resume_variants()}
    assert {"set-sparse", "fixprob-sparse", "set_neuron-sparse"} <= ids, sorted(ids)


@pytest.mark.parametrize("method, overrides", _resume_variants())
def test_checkpoint_resume_gives_identical_metrics(method, overrides, digits, tmp_path):
    cfg = small_config(method)
    if overrides == "budget":
        # 3k of the metric the method is compared by: nonzero weights for the sparse ones (issue 16's budgets).
        sparse = {"epsilon", "sparsity"} & set(get_method(method).Config.keys())
        metric = "weights_nonzero" if sparse else "params_trainable"
        cfg = get_method(method).size_to_budget(cfg, digits.info, 3000, metric)
    else:
        cfg = RunConfig.from_flat({**cfg.flat(), **overrides})
    assert_resume_identical(cfg, digits, tmp_path / "state.pt", after=2)
