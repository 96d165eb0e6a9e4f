"""The one training loop for every method (docs/design.md, "Rules"): short enough to read top to bottom.

`Trainer(cfg)` builds data, method, model, optimizer and schedule; `fit(on_epoch)` trains the remaining
epochs and calls `on_epoch(metrics, trainer)` after each (the workflows report and checkpoint there).
`state_dict()` holds everything a resume needs (model with its buffers/masks, optimizer, schedule, method
state, every RNG, epoch, step, history), so that a run stopped after epoch k and resumed from that state
gives bit-identical metrics on CPU (tests/test_train.py).

Hot path habits: the whole dataset is a tensor on the device, batches are index-permutation slices, the
running loss and accuracy stay on the device, and the host syncs once per epoch (in `_measure`).

For the Lp-sphere image protocol (WilliamLiPro/LpSS demo.py, commit 9c8cbc1, the Fashion-MNIST script):
`train.drop_last` drops each epoch's partial batch, `train.augment` crops/flips/cuts out every training batch on the
device (methods/data/augment.py) from its own generator, and `train.schedule=piecewise` sets the rate at every step.
"""
from __future__ import annotations

import dataclasses
import math
import random
import time
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from . import metrics

from ..data.augment import PRESETS, Augment, normalize
from .config import ConfigError, RunConfig
from ..data import Dataset, load_dataset
from .optim import PER_STEP_SCHEDULES, make_scheduler, steps_per_epoch
from .registry import get_method
from ..nn.sparse_linear import SparseLinear

EpochCallback = Callable[[dict[str, float], "Trainer"], None]


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def check_batches(cfg: RunConfig, data: Dataset) -> int:
    """Optimizer steps per epoch; refuses a config that leaves none (known only once the data is loaded)."""
    n, t = len(data.x_train), cfg.train
    steps = steps_per_epoch(n, t)
    if steps == 0:
        raise ConfigError(f"train.batch_size={t.batch_size} with train.drop_last=true leaves no batch: the training"
                          f" split of {data.info.name!r} has {n} samples; set train.batch_size <= {n}"
                          f" or train.drop_last=false")
    return steps


def prepare_augmentation(cfg: RunConfig, data: Dataset) -> tuple[Dataset, Augment | None]:
    """The data with every split normalised by the preset's mean/std (once), and the per-batch crop/flip/Cutout.
    Normalise-first equals demo.py's order (crop, flip, Normalize, Cutout): see methods/data/augment.py PRESETS."""
    name = cfg.train.augment
    if name == "none":
        return data, None
    preset, shape = PRESETS[name], data.info.input_shape
    if len(shape) != 3 or preset.pad >= min(shape[1:]):
        raise ConfigError(f"train.augment={name!r} needs images [C, H, W] larger than its padding {preset.pad};"
                          f" dataset {data.info.name!r} has input shape {tuple(shape)}: use train.augment=none")
    if preset.mean is not None:
        splits = ("x_train", "x_val", "x_test")   # new tensors: a caller's Dataset is never changed
        data = dataclasses.replace(data, **{k: normalize(getattr(data, k), preset.mean, preset.std) for k in splits})
    return data, dataclasses.replace(preset, mean=None, std=None)


def evaluation_data(cfg: RunConfig, device: str | torch.device | None = "cpu") -> Dataset:
    """The splits exactly as a run of `cfg` trains and measures on (loaded, standardised with the training statistics,
    normalised for its augmentation preset): the inputs a network the run logged expects (docs/tracking.md)."""
    return prepare_augmentation(cfg, load_dataset(cfg.data, resolve_device(device)))[0]


def device_generator(device: torch.device, seed: int) -> torch.Generator:
    # On the batch's device, so that augmentation draws need no host-to-device copy (methods/data/augment.py docstring).
    try:
        return torch.Generator(device=device).manual_seed(seed)
    except RuntimeError:   # a backend without its own generators: draw on the host
        return torch.Generator().manual_seed(seed)


class Trainer:
    def __init__(self, cfg: RunConfig, device: str | torch.device | None = "cpu", data: Dataset | None = None):
        self.cfg = cfg
        self.device = resolve_device(device)
        seed_everything(cfg.train.seed)
        data = data.to(self.device) if data is not None else load_dataset(cfg.data, self.device)
        self.steps_per_epoch = check_batches(cfg, data)
        self.data, self.augment = prepare_augmentation(cfg, data)
        self.method = get_method(cfg.method)(cfg, self.data.info)
        self.model = self.method.make_model().to(self.device)
        self.optimizer = self.method.optimizer(self.model)
        self.scheduler = make_scheduler(self.optimizer, cfg.train, self.steps_per_epoch)
        self.per_step_schedule = cfg.train.schedule in PER_STEP_SCHEDULES
        self._decay_params = self._decayed()
        # Data order and augmentation have their own generators so that dropout or a method's random draws never
        # shift them (and augmentation never shifts the order: runs with and without it see the same batches).
        self.order_rng = torch.Generator().manual_seed(cfg.train.seed)
        # Offset: a stream apart from the order's (same seed) and lp_sphere's topology draws (seed + 7919).
        self.augment_rng = device_generator(self.device, cfg.train.seed + 104_729) if self.augment else None
        self.epoch = 0
        self.step = 0
        self.seconds = 0.0
        self.history: list[dict[str, float]] = []

    def _decayed(self) -> list[torch.Tensor]:
        # Weight matrices only (our choice: the 2019 SET-MLP code decays W; the IJCAI-2019 tutorial also decays b).
        if not self.cfg.train.decoupled_weight_decay:
            return []
        # A truly sparse layer's weight matrix is its 1-D `values` (methods/nn/sparse_linear.py).
        sparse = {id(m.values) for m in self.model.modules() if isinstance(m, SparseLinear)}
        return [p for g in self.optimizer.param_groups for p in g["params"] if p.dim() > 1 or id(p) in sparse]

    def _adopt(self, model: torch.nn.Module) -> None:
        """Go on with a new network (Method.reshape): a fresh optimizer over its parameters (the authors compile a
        new model, Sci. Rep. 2022 pre-training filter), the learning-rate schedule carried over where it was."""
        lrs = [g["lr"] for g in self.optimizer.param_groups]
        schedule = self.scheduler.state_dict()
        self.model = model.to(self.device)
        self.optimizer = self.method.optimizer(self.model)
        self.scheduler = make_scheduler(self.optimizer, self.cfg.train, self.steps_per_epoch)
        self.scheduler.load_state_dict(schedule)
        for g, lr in zip(self.optimizer.param_groups, lrs):
            g["lr"] = lr  # the schedulers' recursive forms read the current rate, not last_epoch
        self._decay_params = self._decayed()

    # ------------------------------------------------------------------ training
    def train_epoch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass over the training split; returns (mean loss, accuracy) as device tensors."""
        x, y, b = self.data.x_train, self.data.y_train, self.cfg.train.batch_size
        self.model.train()
        perm = torch.randperm(len(x), generator=self.order_rng).to(self.device, non_blocking=True)
        if self.cfg.train.drop_last:
            perm = perm[: self.steps_per_epoch * b]   # a fresh permutation's tail dropped, as DataLoader(drop_last)
        batches = perm.split(b)
        # Per step only the loss and the predicted classes are kept; reductions happen once per epoch.
        losses, preds = [], []
        for idx in batches:
            loss, out = self.train_step(x[idx], y[idx])
            losses.append(loss)
            preds.append(out.argmax(1))
        sizes = torch.tensor([len(idx) for idx in batches], dtype=torch.float32, device=self.device)
        return torch.stack(losses) @ sizes / len(perm), (torch.cat(preds) == y[perm]).double().mean()

    def train_step(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on a batch; returns the (detached) cross-entropy and logits."""
        model, opt, method = self.model, self.optimizer, self.method
        if self.augment is not None:
            xb = self.augment(xb, self.augment_rng)   # crop/flip/Cutout; the data is already normalised
        if method.needs_hidden:
            out, hidden = model(xb, return_hidden=True)
        else:
            out, hidden = model(xb), None
        loss = F.cross_entropy(out, yb)
        extra = method.extra_loss(model, xb, out, hidden)
        opt.zero_grad(set_to_none=True)
        (loss if extra is None else loss + extra).backward()
        opt.step()
        if self._decay_params:
            with torch.no_grad():
                torch._foreach_mul_(self._decay_params, 1.0 - self.cfg.train.decoupled_weight_decay)
        self.step += 1
        method.after_step(model, opt, self.step)
        if self.per_step_schedule:
            self.scheduler.step()   # the next step's rate (LpSS sparse_training.py sets it before every step)
        return loss.detach(), out.detach()

    def run_epoch(self) -> dict[str, float]:
        start = time.perf_counter()
        lr = self.optimizer.param_groups[0]["lr"]  # the rate this epoch trained with (per-step: its first step's)
        # The network this epoch starts with (after the last epoch's topology change): half of its FLOP count.
        flops_start = metrics.inference_flops(self.model, metrics.eval_batch(self.data.x_val))
        loss, acc = self.train_epoch()
        if not self.per_step_schedule:
            self.scheduler.step()
        self.epoch += 1
        # Measure the network as trained, then let the method change its topology for the next epoch (the
        # SET code tests before weightsEvolution); the checkpoint taken after this holds the changed topology.
        m = self._measure(loss, acc)
        m["lr"] = lr
        # metrics.py, flops_train: 3 x the mean of the epoch's start and end networks, averaged over epochs. From
        # the history, so a resumed run continues the same mean.
        m["flops_train_epoch"] = metrics.TRAIN_FLOPS_FACTOR * (flops_start + m["flops_inference"]) / 2
        per_epoch = [h["flops_train_epoch"] for h in self.history if "flops_train_epoch" in h] + [m["flops_train_epoch"]]
        m["flops_train"] = sum(per_epoch) / len(per_epoch)
        m.update(self.method.epoch_metrics())
        if self.epoch == self.cfg.train.epochs and self.cfg.train.prune_curve:
            # Of the network as trained and measured (before after_epoch changes it); not training time.
            evaluated = time.perf_counter()
            m["pruning"] = self.pruning_curve()
            start += time.perf_counter() - evaluated
        self.method.after_epoch(self.model, self.optimizer, self.epoch)
        reshaped = self.method.reshape(self.model)
        if reshaped is not None:
            self._adopt(reshaped)
        self.seconds += time.perf_counter() - start
        m["seconds"] = self.seconds
        if not math.isfinite(m["train_loss"]):
            # A NaN/inf loss has poisoned the weights (a too-large rate, usually): every further epoch would be
            # NaN too, so the run ends here as "diverged" with this epoch's metrics, and a search moves on.
            m["diverged"] = True
        self.history.append(m)
        return m

    @property
    def diverged(self) -> bool:
        """The last epoch's loss was not finite (kept in `history`, so a restored run knows it too)."""
        return bool(self.history and self.history[-1].get("diverged"))

    @property
    def finished(self) -> bool:
        """No epoch is left to train: the configured epochs are done, or the last one diverged."""
        return self.epoch >= self.cfg.train.epochs or self.diverged

    def _measure(self, train_loss: torch.Tensor, train_acc: torch.Tensor) -> dict[str, float]:
        d = self.data
        val = metrics.accuracy(self.model, d.x_val, d.y_val)
        test = metrics.accuracy(self.model, d.x_test, d.y_test)
        loss_h, acc_h, val_h, test_h = torch.stack([train_loss.double(), train_acc, val, test]).cpu().tolist()
        return {"epoch": self.epoch, "train_loss": loss_h, "train_acc": acc_h, "val_acc": val_h, "test_acc": test_h,
                **metrics.structure(self.model, self.optimizer, probe=metrics.eval_batch(d.x_val)),
                **metrics.diversity(self.model, metrics.eval_batch(d.x_val))}

    def pruning_curve(self) -> dict[str, list]:
        """`train.prune_curve` evaluated on copies of the current network (methods/nn/node_pruning.py)."""
        d, t = self.data, self.cfg.train
        return metrics.pruning_curve(self.model, {"val": (d.x_val, d.y_val), "test": (d.x_test, d.y_test)},
                                          t.prune_curve, t.prune_score)

    def fit(self, on_epoch: EpochCallback | None = None) -> list[dict[str, float]]:
        """Train until `cfg.train.epochs` (or a diverged epoch), starting from the current epoch (0, or a restored one)."""
        while not self.finished:
            m = self.run_epoch()
            if on_epoch is not None:
                on_epoch(m, self)
        return self.history

    # ------------------------------------------------------------------ checkpoint / resume
    def state_dict(self) -> dict[str, Any]:
        return {
            "config_hash": self.cfg.hash(),
            "config": self.cfg.canonical(),
            "epoch": self.epoch,
            "step": self.step,
            "seconds": self.seconds,
            "history": list(self.history),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "method": self.method.state_dict(),
            "rng": {
                "order": self.order_rng.get_state(),
                **({"augment": self.augment_rng.get_state()} if self.augment_rng is not None else {}),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "numpy": np.random.get_state(),
                "python": random.getstate(),
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["config_hash"] != self.cfg.hash():
            raise ValueError(f"checkpoint belongs to config {state['config_hash']}, not {self.cfg.hash()}")
        # The method first: it may reshape the model (e.g. pruned layers) before the weights are loaded.
        self.method.load_state_dict(state["method"])
        reshaped = self.method.reshape(self.model)
        if reshaped is not None:
            self._adopt(reshaped)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch, self.step, self.seconds = state["epoch"], state["step"], state["seconds"]
        self.history = list(state["history"])
        rng = state["rng"]
        self.order_rng.set_state(rng["order"])
        if self.augment_rng is not None:
            self.augment_rng.set_state(rng["augment"])
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])

    def save(self, path) -> None:
        torch.save(self.state_dict(), path)

    def load(self, path) -> None:
        # map_location="cpu": RNG states must stay CPU byte tensors; load_state_dict moves weights and optimizer
        # state to the model's device. weights_only=False: the state holds numpy/python RNG states (our own file).
        self.load_state_dict(torch.load(path, map_location="cpu", weights_only=False))


def train(cfg: RunConfig, device: str | torch.device | None = "cpu", on_epoch: EpochCallback | None = None) -> list[dict[str, float]]:
    """Train `cfg` from scratch; the per-epoch metrics."""
    return Trainer(cfg, device).fit(on_epoch)
