"""Config canonical form, pinned hashes (old results stay findable), and validation errors."""
from __future__ import annotations

import pytest

from sparsebench.methods import ConfigError, RunConfig, UnknownMethodError
from sparsebench.methods.core.config import DataConfig, TrainConfig

# Pinned: if one of these changes, results already in users' MLflow stores can no longer be found by hash.
PINNED = [
    ({"method": "dense"}, "18dc6f92cef0"),
    ({"method": "dense", "train.epochs": 5}, "ba907cefff25"),
    ({"method": "dense", "model.hidden": [256, 128], "train.lr": 0.1, "train.optimizer": "adam", "data.dataset": "mnist"},
     "5d6cd68708b1"),
]


@pytest.mark.parametrize("flat,expected", PINNED)
def test_pinned_hashes(flat, expected):
    assert RunConfig.from_flat(flat).hash() == expected


def test_default_valued_fields_do_not_change_the_hash():
    explicit = RunConfig.from_flat({"method": "dense", "train.lr": TrainConfig().lr, "data.dataset": "digits",
                                    "model.activation": "relu", "model.hidden": [128, 64], "train.epochs": 5})
    assert explicit.hash() == RunConfig.from_flat({"method": "dense", "train.epochs": 5}).hash()
    assert explicit.canonical() == {"method": "dense", "train": {"epochs": 5}}


def test_int_for_float_and_key_order_do_not_change_the_hash():
    a = RunConfig.from_flat({"method": "dense", "train.lr": 1, "train.epochs": 3})
    b = RunConfig.from_flat({"train.epochs": 3.0, "train.lr": 1.0, "method": "dense"})
    assert a.hash() == b.hash() and a.train.lr == 1.0 and isinstance(a.train.epochs, int)


def test_flat_round_trip_and_replace():
    cfg = RunConfig.from_flat({"method": "dense", "model.hidden": [8], "train.seed": 3})
    assert RunConfig.from_flat(cfg.flat()) == cfg
    assert cfg.replace(**{"train.seed": 4}).train.seed == 4
    assert cfg.without_seed().hash() == RunConfig.from_flat({"method": "dense", "model.hidden": [8]}).hash()


@pytest.mark.parametrize("flat,message", [
    ({"method": "dense", "train.epochs": -1}, r"train.epochs=-1: must be >= 1"),
    ({"method": "dense", "train.epochs": 2.5}, r"train.epochs=2.5: expected an integer"),
    ({"method": "dense", "train.optimizer": "rmsprop"}, r"train.optimizer='rmsprop': allowed values are sgd, adam, adamax"),
    ({"method": "dense", "model.activation": "gelu"}, r"allowed values are relu, tanh, elu, sigmoid"),
    ({"method": "dense", "model.hidden": 64}, r"model.hidden=64: expected a list of int"),
    ({"method": "dense", "model.hidden": [64, 0]}, r"model.hidden\[1\]=0: must be >= 1"),
    ({"method": "dense", "model.dropout": 1.0}, r"model.dropout=1.0: must be < 1.0"),
    ({"method": "dense", "model.bias": "yes"}, r"model.bias='yes': expected true or false"),
    ({"method": "dense", "train.nesterov": True, "train.optimizer": "adam"}, r"train.nesterov=True: needs"),
    ({"method": "dense", "data.val_fraction": 0.0}, r"data.val_fraction=0.0: must be > 0.0"),
    ({"method": "dense", "train.lrr": 0.1}, r"unknown key train.lrr; allowed: train.epochs"),
    ({"method": "dense", "optim.lr": 0.1}, r"unknown key optim.lr"),
    ({"train.lr": 0.1}, r"missing key 'method'"),
])
def test_bad_values_raise_one_line_errors(flat, message):
    with pytest.raises(ConfigError, match=message) as e:
        RunConfig.from_flat(flat)
    assert "\n" not in str(e.value)


def test_unknown_method():
    with pytest.raises(UnknownMethodError, match=r"unknown method 'nope'; registered methods: .*dense"):
        RunConfig(method="nope")


def test_sections_validate_directly():
    with pytest.raises(ConfigError, match="data.max_train=-5"):
        DataConfig(max_train=-5)
