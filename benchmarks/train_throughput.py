"""Epoch time of sparsebench's one training loop against a minimal hand-written PyTorch loop.

What it measures (docs/design.md, "Habits": performance is a ratio measured in one run, never a timed test):

1. training pass: `methods.train.Trainer.train_epoch()` (method `dense`) vs a minimal loop that does only
   permute -> slice -> forward -> cross-entropy -> zero_grad -> backward -> SGD step, with the same MLP
   (initial weights copied from the Trainer's model), seed, batch size, SGD(lr, momentum) and index-permutation
   shuffling of in-memory tensors. The ratio is the loop's own overhead (hooks, running loss/accuracy, model
   wrapper).
2. full epoch: `Trainer.run_epoch()` (training pass + scheduler step + after_epoch + val/test accuracy +
   structure metrics + one host sync) vs the same minimal training epoch. For reference it also prints
   run_epoch vs the minimal epoch plus a minimal val/test accuracy pass, i.e. the part of the full-epoch
   cost that is not work every honest loop must do anyway.

The data are random float32 tensors shaped like MNIST after `methods.data.load_dataset` ((N, 1, 28, 28),
10 classes) with realistic split sizes (default 54 000 train / 6 000 val / 10 000 test), built directly
as a `methods.data.Dataset` so nothing is downloaded. Random labels do not change the cost of an epoch.

Timings alternate in one process after a warm-up (each round is minimal, train_epoch, minimal, run_epoch,
with the order flipped every other round), so drift of the machine (frequency, other load) hits both sides
alike. Medians are reported, with the ratio of medians, the median of the per-round paired ratios and the
ratio of minima (the last two are the ones to read when other processes share the cores).

Run (from the repository root, after `pip install -e .`):

    python benchmarks/train_throughput.py                  # defaults: about a minute on 2 CPU cores
    python benchmarks/train_throughput.py --threads 1
    python benchmarks/train_throughput.py --device cuda --repeats 10
    python benchmarks/train_throughput.py --profile        # also prints where train_epoch spends its time
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from sparsebench.methods.core.config import DataConfig, RunConfig, TrainConfig
from sparsebench.methods.data import DataInfo, Dataset
from sparsebench.methods.families.dense import DenseConfig
from sparsebench.methods.core.train import Trainer, resolve_device

INPUT_SHAPE = (1, 28, 28)  # what load_dataset("mnist") yields; the MLP flattens it to 784 inputs
NUM_CLASSES = 10


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train-size", type=int, default=54_000, help="training samples (MNIST: 60 000 minus 10%% val)")
    p.add_argument("--val-size", type=int, default=6_000, help="validation samples, measured by run_epoch")
    p.add_argument("--test-size", type=int, default=10_000, help="test samples, measured by run_epoch")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--hidden", type=str, default="256,128", help="hidden widths, comma-separated (default 256,128)")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=10,
                   help="timed rounds; each round times 2 minimal epochs, 1 train_epoch and 1 run_epoch")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--device", type=str, default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    p.add_argument("--profile", action="store_true",
                   help="after timing, profile one train_epoch and one minimal epoch with torch.profiler")
    args = p.parse_args(argv)
    try:
        args.hidden = tuple(int(h) for h in args.hidden.split(",") if h.strip())
    except ValueError:
        p.error(f"--hidden={args.hidden!r}: expected comma-separated integers, e.g. 256,128")
    for name in ("train_size", "val_size", "test_size", "batch_size", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')}={getattr(args, name)}: must be >= 1")
    if not args.hidden or min(args.hidden) < 1:
        p.error(f"--hidden: expected positive widths, got {args.hidden}")
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads={args.threads}: must be >= 1")
    return args


def make_data(n_train: int, n_val: int, n_test: int, seed: int) -> Dataset:
    """Random MNIST-shaped splits; uniform [0, 1) like scaled pixels."""
    g = torch.Generator().manual_seed(seed)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.rand((n, *INPUT_SHAPE), generator=g), torch.randint(0, NUM_CLASSES, (n,), generator=g)

    (xtr, ytr), (xva, yva), (xte, yte) = split(n_train), split(n_val), split(n_test)
    info = DataInfo("random_mnist_shaped", INPUT_SHAPE, NUM_CLASSES, n_train, n_val, n_test,
                    checksum="none", source="benchmarks/train_throughput.py: torch.rand, seed %d" % seed)
    return Dataset(xtr, ytr, xva, yva, xte, yte, info)


def minimal_model(trainer_model: nn.Module, widths: tuple[int, ...]) -> nn.Sequential:
    """The plain nn.Sequential equivalent of the Trainer's MLP, starting from the same weights."""
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    model = nn.Sequential(*layers[:-1])  # no activation after the logits
    # Copy rather than re-seed: identical starting weights whatever init the method uses.
    src = [p for p in trainer_model.parameters()]
    dst = [p for p in model.parameters()]
    if [p.shape for p in src] != [p.shape for p in dst]:
        raise SystemExit(f"trainer model parameters {[tuple(p.shape) for p in src]} do not match the minimal MLP "
                         f"{[tuple(p.shape) for p in dst]}; update minimal_model()")
    with torch.no_grad():
        for s, d in zip(src, dst):
            d.copy_(s)
    return model


class MinimalLoop:
    """The shortest honest training epoch: what every loop must do, nothing else."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, lr: float,
                 momentum: float, seed: int):
        self.model, self.x, self.y, self.batch_size = model, x, y, batch_size
        self.opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
        # Same generator and seed as Trainer.order_rng, so the first epochs see the same batches.
        self.gen = torch.Generator().manual_seed(seed)

    def epoch(self) -> None:
        model, opt, x, y = self.model, self.opt, self.x, self.y
        model.train()
        perm = torch.randperm(len(x), generator=self.gen).to(x.device)
        for idx in perm.split(self.batch_size):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    @torch.no_grad()
    def evaluate(self, xs: list[torch.Tensor], ys: list[torch.Tensor]) -> list[float]:
        """Minimal val/test accuracy (the reference for run_epoch's measuring work)."""
        self.model.eval()
        accs = [(self.model(x).argmax(1) == y).double().mean() for x, y in zip(xs, ys)]
        self.model.train()
        return torch.stack(accs).cpu().tolist()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    sync(device)  # CUDA is asynchronous: start and stop the clock on an idle device
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def load_average() -> str:
    try:
        return "%.2f %.2f %.2f" % os.getloadavg()
    except (AttributeError, OSError):  # not available on Windows
        return "n/a"


def describe(name: str, ts: list[float]) -> str:
    return (f"  {name:<34} median {statistics.median(ts):8.4f} s   min {min(ts):8.4f}   max {max(ts):8.4f}   "
            f"n={len(ts)}")


def profile(trainer: Trainer, minimal: MinimalLoop, device: torch.device) -> None:
    """Operator-level profile of one epoch of each loop. Timings in a profile are as noisy as the machine, but
    operator call counts are exact: the operators called more often by the Trainer are its extra work."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    stats = {}
    for name, fn in (("Trainer.train_epoch()", trainer.train_epoch), ("minimal epoch", minimal.epoch)):
        with torch_profile(activities=activities) as prof:
            fn()
            sync(device)
        table = prof.key_averages()
        stats[name] = {e.key: (e.count, e.self_cpu_time_total) for e in table}
        print(f"\n== torch.profiler: {name} (top 15 by self CPU time) ==")
        print(table.table(sort_by="self_cpu_time_total", row_limit=15))
    t, m = stats.values()
    steps = -(-len(trainer.data.x_train) // trainer.cfg.train.batch_size)
    print(f"\n== operators the Trainer calls more often than the minimal loop (per epoch of {steps} steps) ==")
    print(f"  {'operator':<50} {'calls':>13} {'extra/step':>10} {'self CPU ms':>16}")
    for key in sorted(set(t) | set(m)):
        (ct, st), (cm, sm) = t.get(key, (0, 0.0)), m.get(key, (0, 0.0))
        if ct != cm:
            print(f"  {key:<50} {cm:>5} -> {ct:<5} {(ct - cm) / steps:>+10.2f} {sm / 1e3:>7.1f} -> {st / 1e3:<7.1f}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)

    cfg = RunConfig(
        method="dense",
        data=DataConfig(),  # unused: the data are passed in, but the config stays a valid trial
        train=TrainConfig(batch_size=args.batch_size, optimizer="sgd", lr=args.lr, momentum=args.momentum,
                          schedule="constant", seed=args.seed),
        model=DenseConfig(hidden=args.hidden, activation="relu"),
    )
    data = make_data(args.train_size, args.val_size, args.test_size, args.seed)
    trainer = Trainer(cfg, device, data=data)
    widths = (data.info.in_features, *args.hidden, NUM_CLASSES)
    minimal = MinimalLoop(minimal_model(trainer.model, widths).to(device), trainer.data.x_train,
                          trainer.data.y_train, args.batch_size, args.lr, args.momentum, args.seed)

    print("sparsebench train throughput: Trainer (method dense) vs minimal PyTorch loop")
    print(f"  torch {torch.__version__}, python {platform.python_version()}, {platform.processor() or platform.machine()}, "
          f"device {device}, threads {torch.get_num_threads()}")
    print(f"  data {args.train_size} train / {args.val_size} val / {args.test_size} test, input {INPUT_SHAPE}, "
          f"MLP {'-'.join(map(str, widths))} relu, batch {args.batch_size}, SGD lr {args.lr} momentum {args.momentum}, "
          f"{-(-args.train_size // args.batch_size)} steps/epoch, repeats {args.repeats}")
    print(f"  load average at start {load_average()} (other processes on these cores make every ratio noisy)")

    # Warm-up: two epochs each (allocator, kernels, caches; the second one through run_epoch's measuring path).
    # Both start from the same weights and the same permutation, so after the first one they must agree: a check
    # that the two loops do the same work, not a timing assertion.
    trainer.train_epoch()
    minimal.epoch()
    diff = max((a - b).abs().max().item() for a, b in zip(trainer.model.parameters(), minimal.model.parameters()))
    print(f"  same-work check: max |weight difference| after one warm-up epoch = {diff:.3g}")
    trainer.run_epoch()
    minimal.epoch()
    minimal.evaluate([trainer.data.x_val, trainer.data.x_test], [trainer.data.y_val, trainer.data.y_test])

    t_min: list[float] = []
    t_train: list[float] = []
    t_run: list[float] = []
    t_eval: list[float] = []
    paired_train: list[float] = []
    paired_run: list[float] = []
    evals = ([trainer.data.x_val, trainer.data.x_test], [trainer.data.y_val, trainer.data.y_test])
    for r in range(args.repeats):
        # Alternate A, B and flip the order every other round so neither side always runs first.
        pairs = [("train", trainer.train_epoch), ("run", trainer.run_epoch)]
        for kind, fn in pairs:
            if r % 2 == 0:
                m, t = timed(minimal.epoch, device), timed(fn, device)
            else:
                t, m = timed(fn, device), timed(minimal.epoch, device)
            t_min.append(m)
            (t_train if kind == "train" else t_run).append(t)
            (paired_train if kind == "train" else paired_run).append(t / m)
        t_eval.append(timed(lambda: minimal.evaluate(*evals), device))
        print(f"  round {r + 1}/{args.repeats}: minimal {t_min[-2]:.3f}/{t_min[-1]:.3f} s, "
              f"train_epoch {t_train[-1]:.3f} s, run_epoch {t_run[-1]:.3f} s", flush=True)

    med = statistics.median
    print("\nmedian epoch times")
    print(describe("minimal loop epoch", t_min))
    print(describe("Trainer.train_epoch()", t_train))
    print(describe("Trainer.run_epoch()", t_run))
    print(describe("minimal val+test accuracy", t_eval))
    # Three estimates of one ratio: they agree on a quiet machine; on a shared one the paired median and the
    # ratio of minima resist epochs slowed by other processes better than the ratio of medians.
    print("\nratios (trainer / minimal; 1.00 = no overhead)        of medians   paired median   of minima")
    print(f"  (1) training pass  train_epoch / minimal epoch       {med(t_train) / med(t_min):6.3f}"
          f"       {med(paired_train):6.3f}        {min(t_train) / min(t_min):6.3f}")
    print(f"  (2) full epoch     run_epoch   / minimal epoch       {med(t_run) / med(t_min):6.3f}"
          f"       {med(paired_run):6.3f}        {min(t_run) / min(t_min):6.3f}")
    print(f"      reference      run_epoch   / (minimal + eval)    {med(t_run) / (med(t_min) + med(t_eval)):6.3f}   "
          f"(run_epoch - train_epoch = {med(t_run) - med(t_train):.4f} s of measuring per epoch)")

    print(f"  load average at end {load_average()}")

    if args.profile:
        profile(trainer, minimal, device)


if __name__ == "__main__":
    main(sys.argv[1:])
