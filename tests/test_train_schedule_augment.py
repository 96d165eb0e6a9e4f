"""The training loop's Lp-sphere image-protocol features (WilliamLiPro/LpSS demo.py, commit 9c8cbc1):
the per-step piecewise-linear rate, drop_last, and on-device batch augmentation, each measured, with resume."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sparsebench.methods import ConfigError, RunConfig, Trainer, load_dataset, metrics
from sparsebench.methods.data.augment import FASHION_MNIST_LPSS, PRESETS, Augment, normalize
from sparsebench.methods.core.config import DataConfig, TrainConfig

from .conftest import small_config

N_TRAIN = 1212  # digits training split (tests/conftest.py `digits`)
PIECEWISE = {"train.schedule": "piecewise", "train.piecewise_knots": [0, 0.25, 0.5, 1],
             "train.piecewise_values": [0.1, 1.0, 0.5, 0.0], "train.lr": 0.2}


class Recording(Trainer):
    """Keeps, per optimizer step, every group's rate, the raw batch, and the batch the model was given."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.lrs, self.raw, self.seen = [], [], []
        self.model.register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        if module.training:
            self.seen.append(args[0].detach().clone())

    def train_step(self, xb, yb):
        self.lrs.append([g["lr"] for g in self.optimizer.param_groups])
        self.raw.append(xb.clone())
        return super().train_step(xb, yb)


def expected_rates(cfg: RunConfig, steps_per_epoch: int) -> np.ndarray:
    """demo.py: the k-th step (1-based) trains at lr * PiecewiseLinear(knots * E, vals)(k / steps_per_epoch)."""
    t = cfg.train
    k = np.arange(1, t.epochs * steps_per_epoch + 1)
    return t.lr * np.interp(k / steps_per_epoch, np.array(t.piecewise_knots) * t.epochs, t.piecewise_values)


def strip(history):
    return [{k: v for k, v in m.items() if k != "seconds"} for m in history]


# ------------------------------------------------------------------ piecewise schedule
@pytest.mark.parametrize("drop_last", [False, True])
def test_piecewise_rate_is_set_at_every_step(digits, drop_last):
    cfg = small_config("dense", **PIECEWISE, **{"train.drop_last": drop_last})
    tr = Recording(cfg, data=digits)
    hist = tr.fit()
    spe = N_TRAIN // 64 if drop_last else math.ceil(N_TRAIN / 64)
    got = np.array([lr[0] for lr in tr.lrs])
    assert len(got) == 4 * spe
    np.testing.assert_allclose(got, expected_rates(cfg, spe), rtol=1e-12, atol=1e-15)
    assert len(set(got[:spe])) == spe        # the rate changes within an epoch (not a per-epoch schedule)
    # The logged `lr` is the rate of the epoch's first step.
    assert [m["lr"] for m in hist] == pytest.approx(got[::spe].tolist())


def test_piecewise_keeps_the_ratio_of_groups_with_different_rates(digits):
    """lp_sgd has the mixing-rate groups (train.lr / batch_size) beside the free group (train.lr)."""
    cfg = small_config("lp_sgd", **PIECEWISE, **{"train.epochs": 2})
    tr = Recording(cfg, data=digits)
    factor = expected_rates(cfg, math.ceil(N_TRAIN / 64)) / cfg.train.lr
    base = np.array([g["lr"] for g in tr.optimizer.param_groups]) / factor[0]
    assert sorted(set(base.round(12))) == pytest.approx([0.2 / 64, 0.2])   # mixing rate and train.lr
    tr.fit()
    np.testing.assert_allclose(np.array(tr.lrs), factor[:, None] * base, rtol=1e-12)   # [steps, groups]


def test_piecewise_schedule_survives_a_new_network(digits):
    """spectral_filter swaps in a smaller network after epoch 2 (Trainer._adopt): the rate goes on per step."""
    cfg = small_config("spectral_filter", **PIECEWISE)
    tr = Recording(cfg, data=digits)
    first = tr.model
    tr.fit()
    assert tr.model is not first             # the network (and its optimizer) was swapped
    spe = math.ceil(N_TRAIN / 16)
    np.testing.assert_allclose([lr[0] for lr in tr.lrs], expected_rates(cfg, spe), rtol=1e-12)


@pytest.mark.parametrize("flat,per_epoch", [
    ({"train.schedule": "constant", "train.lr": 0.1}, [0.1] * 4),
    ({"train.schedule": "step", "train.step_size": 2, "train.gamma": 0.5, "train.lr": 0.1}, [0.1, 0.1, 0.05, 0.05]),
    ({"train.schedule": "cosine", "train.lr": 0.1}, [0.1 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)]),
])
def test_epoch_schedules_hold_one_rate_per_epoch(digits, flat, per_epoch):
    tr = Recording(small_config("dense", **flat), data=digits)
    tr.fit()
    spe = math.ceil(N_TRAIN / 64)
    got = np.array([lr[0] for lr in tr.lrs]).reshape(4, spe)
    np.testing.assert_allclose(got, np.repeat(np.array(per_epoch)[:, None], spe, 1), rtol=1e-12)


def test_piecewise_defaults_are_the_lpss_demo_shape_over_its_peak():
    t = TrainConfig(schedule="piecewise", epochs=50)
    # demo.py: knots = [0, E/6, E/3, E-3, E], vals1 = [0.04, 2, 0.5, 0.004, 0.0002] (LpSS), peak 2.
    np.testing.assert_allclose(np.array(t.piecewise_knots) * 50, [0, 50 / 6, 50 / 3, 47, 50], rtol=1e-12)
    np.testing.assert_allclose(np.array(t.piecewise_values) * 2, [0.04, 2, 0.5, 0.004, 0.0002], rtol=1e-12)


# ------------------------------------------------------------------ drop_last
def test_drop_last_steps_and_epoch_means_over_the_trained_samples(digits):
    b = 500                                   # 2 batches of 500 trained, 212 samples dropped each epoch
    cfg = small_config("dense", **{"train.epochs": 1, "train.batch_size": b, "train.drop_last": True,
                                   "model.dropout": 0.0, "train.lr": 1e-9})
    tr = Trainer(cfg, data=digits)
    with torch.no_grad():                     # lr ~ 0: the weights do not move, a full pass gives the same outputs
        out = tr.model(digits.x_train)
    m = tr.run_epoch()
    assert tr.step == N_TRAIN // b == 2
    trained = torch.randperm(N_TRAIN, generator=torch.Generator().manual_seed(cfg.train.seed))[: 2 * b]
    acc = (out[trained].argmax(1) == digits.y_train[trained]).double().mean().item()
    loss = F.cross_entropy(out[trained], digits.y_train[trained]).item()
    assert m["train_acc"] == pytest.approx(acc, abs=1e-12) and m["train_loss"] == pytest.approx(loss, rel=1e-5)
    full = (out.argmax(1) == digits.y_train).double().mean().item()
    assert acc != full                        # the check above would catch a mean over all samples


def test_drop_last_avoids_a_batch_of_one_for_batchnorm(digits):
    flat = {"train.epochs": 1, "train.batch_size": N_TRAIN - 1, "model.batchnorm": True}
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        Trainer(small_config("dense", **flat), data=digits).fit()
    tr = Trainer(small_config("dense", **flat, **{"train.drop_last": True}), data=digits)
    tr.fit()
    assert tr.step == 1


def test_drop_last_with_a_batch_larger_than_the_training_split_is_refused(digits):
    cfg = small_config("dense", **{"train.batch_size": 2000, "train.drop_last": True})
    with pytest.raises(ConfigError, match=r"train.batch_size=2000 .* 'digits' has 1212 samples; set "
                                          r"train.batch_size <= 1212") as e:
        Trainer(cfg, data=digits)
    assert "\n" not in str(e.value)
    tr = Trainer(cfg.replace(**{"train.drop_last": False}), data=digits)   # one partial batch per epoch
    tr.run_epoch()
    assert tr.step == 1


# ------------------------------------------------------------------ augmentation
def test_crop_preset_batches_are_reflect_windows_from_the_trainers_generator(digits):
    cfg = small_config("dense", **{"train.epochs": 1, "train.augment": "crop"})
    tr = Recording(cfg, data=digits)
    assert tr.data.x_train is digits.x_train  # no normalisation in this preset
    g = torch.Generator().manual_seed(0)
    g.set_state(tr.augment_rng.get_state())   # replay the trainer's draws
    tr.fit()
    aug = Augment(pad=2, flip=False, cutout=0)
    for raw, seen in zip(tr.raw, tr.seen, strict=True):
        assert torch.equal(seen, aug(raw, g))
    raw, seen = tr.raw[0], tr.seen[0]
    padded = F.pad(raw, (2, 2, 2, 2), mode="reflect")
    offsets = set()
    for i in range(len(raw)):                 # each sample: an unflipped 8x8 window of its reflect-padded image
        hits = [(t, l) for t in range(5) for l in range(5) if torch.equal(seen[i], padded[i, :, t:t + 8, l:l + 8])]
        assert hits, i
        offsets.update(hits)
    assert len(offsets) > 10 and not torch.equal(seen, raw)


def test_normalised_once_train_batches_match_the_demo_order_and_eval_is_never_augmented(digits):
    cfg = small_config("dense", **{"train.epochs": 2, "train.augment": "lpss_fashion_mnist"})
    tr = Recording(cfg, data=digits)
    for split in ("x_train", "x_val", "x_test"):
        assert torch.equal(getattr(tr.data, split), normalize(getattr(digits, split), (0.13,), (0.31,)))
    assert float(digits.x_train.min()) == 0.0  # the caller's dataset is untouched
    g = torch.Generator().manual_seed(0)
    g.set_state(tr.augment_rng.get_state())
    hist = tr.fit()
    # demo.py's order on the raw pixels (crop, flip, Normalize, Cutout) equals the trainer's normalise-first batches.
    order = torch.Generator().manual_seed(cfg.train.seed)            # replay of the trainer's data order
    pixels = [digits.x_train[i] for _ in range(2) for i in torch.randperm(N_TRAIN, generator=order).split(64)]
    for raw, seen in zip(pixels, tr.seen, strict=True):
        assert torch.equal(seen, FASHION_MNIST_LPSS(raw, g))
    holes = torch.cat(tr.seen).eq(0).flatten(1).sum(1)               # no digits pixel normalises to exactly 0
    assert int(holes.min()) >= 9 and int(holes.max()) == 36          # one 6x6 Cutout hole, clipped at the border
    val = metrics.accuracy(tr.model, normalize(digits.x_val, (0.13,), (0.31,)), digits.y_val).item()
    test = metrics.accuracy(tr.model, normalize(digits.x_test, (0.13,), (0.31,)), digits.y_test).item()
    assert (hist[-1]["val_acc"], hist[-1]["test_acc"]) == (val, test)


@pytest.mark.parametrize("method,flat", [
    ("dense", {"train.augment": "crop_flip", "train.drop_last": True, "model.batchnorm": True, **PIECEWISE}),
    ("lp_sgd", {"train.augment": "lpss_fashion_mnist", "train.drop_last": True, **PIECEWISE}),
    ("spectral_filter", {"train.augment": "crop", **PIECEWISE}),   # resumed across the network swap (epoch 2)
], ids=["dense", "lp_sgd", "spectral_filter"])
@pytest.mark.parametrize("stop", [1, 2])
def test_resume_is_bit_identical_with_augmentation_drop_last_and_piecewise(digits, tmp_path, method, flat, stop):
    cfg = small_config(method, **flat)
    full = Trainer(cfg, data=digits).fit()
    part = Trainer(cfg, data=digits)
    for _ in range(stop):
        part.run_epoch()
    part.save(tmp_path / "s.pt")
    resumed = Trainer(cfg, data=digits)
    resumed.load(tmp_path / "s.pt")
    assert strip(resumed.fit()) == strip(full)
    other = Trainer(cfg.replace(**{"train.seed": 1}), data=digits).fit()
    assert strip(other) != strip(full)


def test_augmentation_draws_do_not_shift_the_data_order(digits):
    a = Recording(small_config("dense", **{"train.epochs": 1}), data=digits)
    b = Recording(small_config("dense", **{"train.epochs": 1, "train.augment": "crop"}), data=digits)
    a.fit(), b.fit()
    assert all(torch.equal(x, y) for x, y in zip(a.raw, b.raw, strict=True))


def test_augmentation_of_tabular_data_is_refused():
    iris = load_dataset(DataConfig(dataset="iris"))
    with pytest.raises(ConfigError, match=r"train.augment='crop_flip' .*'iris' has input shape \(4,\)") as e:
        Trainer(RunConfig.from_flat({"method": "dense", "data.dataset": "iris", "train.augment": "crop_flip"}),
                data=iris)
    assert "\n" not in str(e.value)


# ------------------------------------------------------------------ config errors
@pytest.mark.parametrize("flat,message", [
    ({"train.schedule": "linear"}, r"train.schedule='linear': allowed values are constant, step, cosine, piecewise"),
    ({"train.schedule": "piecewise", "train.piecewise_knots": [0, 1]},
     r"train.piecewise_knots has 2 entries and train.piecewise_values 5"),
    ({"train.schedule": "piecewise", "train.piecewise_knots": [0], "train.piecewise_values": [1]},
     r"train.piecewise_knots has 1 entries .* at least 2"),
    ({"train.schedule": "piecewise", "train.piecewise_knots": [0.1, 1], "train.piecewise_values": [1, 1]},
     r"train.piecewise_knots=\[0.1, 1.0\]: must increase strictly from 0 to 1"),
    ({"train.schedule": "piecewise", "train.piecewise_knots": [0, 0.9], "train.piecewise_values": [1, 1]},
     r"train.piecewise_knots=\[0.0, 0.9\]: must increase"),
    ({"train.schedule": "piecewise", "train.piecewise_knots": [0, 0.5, 0.5, 1], "train.piecewise_values": [1] * 4},
     r"train.piecewise_knots=\[0.0, 0.5, 0.5, 1.0\]: must increase strictly"),
    ({"train.schedule": "piecewise", "train.piecewise_knots": [0, 1.5], "train.piecewise_values": [1, 1]},
     r"train.piecewise_knots\[1\]=1.5: must be <= 1.0"),
    ({"train.schedule": "piecewise", "train.piecewise_knots": [0, 1], "train.piecewise_values": [-0.1, 1]},
     r"train.piecewise_values\[0\]=-0.1: must be >= 0.0"),
    ({"train.piecewise_knots": [0, 1], "train.piecewise_values": [1, 1]},
     r"train.piecewise_knots is only read by train.schedule=piecewise, not 'constant'"),
    ({"train.schedule": "cosine", "train.piecewise_values": [1, 1, 1, 1, 1]},
     r"train.piecewise_values is only read by train.schedule=piecewise, not 'cosine'"),
    ({"train.augment": "cutout"}, r"train.augment='cutout': allowed values are none, " + ", ".join(PRESETS)),
    ({"train.drop_last": "yes"}, r"train.drop_last='yes': expected true or false"),
])
def test_bad_values_raise_one_line_errors(flat, message):
    with pytest.raises(ConfigError, match=message) as e:
        RunConfig.from_flat({"method": "dense", **flat})
    assert "\n" not in str(e.value)


def test_default_piecewise_keys_with_another_schedule_are_accepted_and_hash_alike():
    d = TrainConfig()
    explicit = RunConfig.from_flat({"method": "dense", "train.piecewise_knots": list(d.piecewise_knots),
                                    "train.piecewise_values": list(d.piecewise_values), "train.augment": "none",
                                    "train.drop_last": False})
    assert explicit.hash() == RunConfig(method="dense").hash()
