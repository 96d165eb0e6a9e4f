"""The one training loop: optimizers, schedules, resume across every combination, bad checkpoints."""
from __future__ import annotations

import math

import pytest
import torch

from sparsebench.methods import RunConfig, Trainer

from .conftest import small_config

COMBOS = [
    {"train.optimizer": "sgd", "train.schedule": "step", "train.step_size": 2, "train.gamma": 0.5, "train.nesterov": True,
     "train.weight_decay": 1e-4},
    {"train.optimizer": "adam", "train.schedule": "cosine", "train.lr": 0.003},
    {"train.optimizer": "adamax", "train.schedule": "constant", "train.lr": 0.01, "model.activation": "tanh"},
    {"train.optimizer": "sgd", "model.activation": "elu", "model.bias": False},
    {"train.optimizer": "sgd", "model.activation": "sigmoid", "train.lr": 0.5},
]


@pytest.mark.parametrize("flat", COMBOS, ids=lambda f: "-".join(str(v) for v in f.values()))
def test_resume_is_bit_identical_for_every_optimizer_and_schedule(flat, digits, tmp_path):
    cfg = small_config("dense", **flat)
    full = Trainer(cfg, data=digits).fit()
    part = Trainer(cfg, data=digits)
    part.run_epoch()
    part.save(tmp_path / "s.pt")
    resumed = Trainer(cfg, data=digits)
    resumed.load(tmp_path / "s.pt")
    rest = resumed.fit()
    assert len(rest) == len(full)
    for a, b in zip(rest, full):
        a, b = dict(a), dict(b)
        a.pop("seconds"), b.pop("seconds")
        assert a == b


def test_schedules_change_the_learning_rate_as_configured(digits):
    step = Trainer(small_config("dense", **{"train.schedule": "step", "train.step_size": 2, "train.gamma": 0.5,
                                            "train.lr": 0.1}), data=digits).fit()
    # `lr` is the rate the epoch trained with.
    assert [m["lr"] for m in step] == pytest.approx([0.1, 0.1, 0.05, 0.05])
    cos = Trainer(small_config("dense", **{"train.schedule": "cosine", "train.lr": 0.1}), data=digits).fit()
    expected = [0.1 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)]  # CosineAnnealingLR, T_max = epochs
    assert [m["lr"] for m in cos] == pytest.approx(expected)


def test_same_seed_same_run_other_seed_other_run(digits):
    cfg = small_config("dense", **{"train.epochs": 2})
    a, b = Trainer(cfg, data=digits).fit(), Trainer(cfg, data=digits).fit()
    c = Trainer(cfg.replace(**{"train.seed": 1}), data=digits).fit()
    assert a[-1]["train_loss"] == b[-1]["train_loss"]
    assert a[-1]["train_loss"] != c[-1]["train_loss"]


def test_checkpoint_of_another_config_is_refused(digits, tmp_path):
    a = Trainer(small_config("dense"), data=digits)
    a.save(tmp_path / "a.pt")
    b = Trainer(small_config("dense", **{"train.lr": 0.2}), data=digits)
    with pytest.raises(ValueError, match="checkpoint belongs to config"):
        b.load(tmp_path / "a.pt")


def test_weight_decay_shrinks_weights(digits):
    base = {"train.epochs": 2, "train.momentum": 0.0}
    plain = Trainer(small_config("dense", **base), data=digits)
    decayed = Trainer(small_config("dense", **base, **{"train.weight_decay": 0.05}), data=digits)
    plain.fit(), decayed.fit()
    norm = lambda t: sum(p.norm() ** 2 for p in t.model.parameters())  # noqa: E731
    assert norm(decayed) < norm(plain)


def test_dense_model_matches_config(digits):
    cfg = RunConfig.from_flat({"method": "dense", "model.hidden": [20, 10], "model.bias": False, "model.dropout": 0.2})
    model = Trainer(cfg, data=digits).model
    assert [tuple(l.weight.shape) for l in model.layers] == [(20, 64), (10, 20), (10, 10)]
    assert all(l.bias is None for l in model.layers)
    assert model.dropout == 0.2
    x = digits.x_test[:50]
    model.eval()
    assert torch.equal(model(x), model(x))  # no dropout at evaluation
    model.train()
    dropped = model(x)
    assert not torch.equal(dropped, model.eval()(x))  # dropout active in training


def test_train_loss_and_accuracy_are_the_epoch_means(digits):
    """The loop's per-epoch train_loss/train_acc equal a sample-weighted mean over its own batches."""
    cfg = small_config("dense", **{"train.epochs": 1, "train.batch_size": 500, "model.dropout": 0.0, "train.lr": 1e-9})
    tr = Trainer(cfg, data=digits)
    with torch.no_grad():  # with lr ~ 0 the weights do not move, so a full-batch pass gives the same numbers
        out = tr.model(digits.x_train)
        loss = torch.nn.functional.cross_entropy(out, digits.y_train).item()
        acc = (out.argmax(1) == digits.y_train).double().mean().item()
    m = tr.run_epoch()
    assert m["train_loss"] == pytest.approx(loss, rel=1e-5) and m["train_acc"] == pytest.approx(acc)


def test_a_nan_loss_ends_the_run_as_diverged_and_a_resume_does_not_continue_it(digits, tmp_path):
    """SGD at rate 1e8 overflows to NaN in its first epoch: the run stops there, flagged, with that epoch's metrics."""
    cfg = small_config("dense", **{"train.epochs": 4, "train.optimizer": "sgd", "train.lr": 1e8})
    tr = Trainer(cfg, data=digits)
    history = tr.fit()
    assert len(history) == 1 and tr.epoch == 1 and tr.diverged
    assert history[0]["diverged"] is True and not math.isfinite(history[0]["train_loss"])
    assert 0.0 <= history[0]["val_acc"] <= 1.0        # still measured, so the search learns from it
    tr.save(tmp_path / "d.pt")
    resumed = Trainer(cfg, data=digits)
    resumed.load(tmp_path / "d.pt")
    assert resumed.diverged and len(resumed.fit()) == 1 and resumed.epoch == 1   # nothing trained after a restore
    healthy = Trainer(small_config("dense", **{"train.epochs": 2}), data=digits)
    assert all("diverged" not in m for m in healthy.fit()) and not healthy.diverged
