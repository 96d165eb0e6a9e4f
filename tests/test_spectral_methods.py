"""The registered spectral methods (issue 5): variants learn, counts and sparsity through the Trainer."""
from __future__ import annotations

import pytest

from sparsebench.methods import ConfigError, RunConfig, Trainer

from .conftest import small_config


@pytest.mark.parametrize("variant", ["eig_out", "eig_out_full", "two_sets", "ssvd", "qr", "full"])
def test_every_variant_learns_on_digits(variant, digits):
    hist = Trainer(small_config("spectral", **{"model.variant": variant, "train.epochs": 5, "model.dropout": 0.0}),
                   data=digits).fit()
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert hist[-1]["val_acc"] > 0.3, [m["val_acc"] for m in hist]   # 10 classes: chance is 0.1


def test_params_trainable_through_the_trainer_is_the_closed_form(digits):
    n1, n2, c = 64, 256, 10
    expected = {"eig_out": n2 + c, "eig_out_full": n2 + c + n1 * n2 + n2 * c, "two_sets": n1 + n2 + n2 + c, "ssvd": n1 + n2 + n2 + c + min(n1, n2) + min(n2, c),
                "qr": n1 + n2 + n2 + c + (n1 * n1 + n1) // 2 + (n2 > n1) * (n2 - n1) * n1 + (c * c + c) // 2,
                "full": n1 + n2 + n2 + c + n1 * n2 + n2 * c}
    for variant, weights in expected.items():
        m = Trainer(small_config("spectral", **{"model.variant": variant, "train.epochs": 1}), data=digits).fit()[0]
        assert m["params_trainable"] == weights + n2 + c, variant     # + biases
        assert m["params_dense"] == n1 * n2 + n2 * c + n2 + c


def test_per_layer_variants(digits):
    tr = Trainer(small_config("spectral", **{"model.layer_variants": ["eig_out", "full"]}), data=digits)
    assert [l.variant for l in tr.model.layers] == ["eig_out", "full"]
    with pytest.raises(ConfigError, match="model.layer_variants"):
        small_config("spectral", **{"model.layer_variants": ["qr"]})


@pytest.mark.parametrize("method", ["spectral_sparse", "dense_sparse"])
@pytest.mark.parametrize("sparsity", [0.8, 0.95])
def test_reported_weight_sparsity_is_the_requested_one(method, sparsity, digits):
    m = Trainer(small_config(method, **{"model.sparsity": sparsity, "train.epochs": 1}), data=digits).fit()[0]
    for k, n in ((0, 64 * 256), (1, 256 * 10)):
        assert m[f"layer{k}/weight_sparsity"] == int(sparsity * n) / n
    assert m["weights_nonzero"] == sum(n - int(sparsity * n) for n in (64 * 256, 256 * 10))


def test_impossible_sparsity_is_a_one_line_error():
    for bad in (1.0, -0.1):
        with pytest.raises(ConfigError, match="model.sparsity") as e:
            RunConfig.from_flat({"method": "spectral_sparse", "model.sparsity": bad})
        assert "\n" not in str(e.value)
