"""Truly sparse SET at large widths (issue 18): peak resident memory and epoch time of `set` with
model.sparse_compute = sparse vs = mask over a sweep of hidden widths at one ER epsilon (the mask path only where
it fits), and the large run: a SET MLP with over a million hidden neurons (Curci, Mocanu, Pechenizkiy, "Truly
Sparse Neural Networks at Scale", arXiv 2102.01732, trained such networks on one CPU) built and trained on MNIST.

Peak RSS: the growth of this process's peak resident set (Linux VmHWM, reset through /proc/self/clear_refs before
each variant) over building the Trainer's model and optimizer and training one epoch with its SET rewiring; the
sweep loads its data before the reset, the large run after it (its peak includes loading MNIST). Epoch time:
`Trainer.train_epoch()` plus the rewiring, after a warm-up of one batch, without the per-epoch metrics (`act_corr`
needs an H x H matrix per hidden layer: docs/sparse-compute.md).

    python benchmarks/sparse_scale.py --widths 1000,10000,100000            # the sweep, random MNIST-shaped data
    python benchmarks/sparse_scale.py --widths 1000 --train-size 500       # a quick look
    python benchmarks/sparse_scale.py --scale 1000000 --epsilon 2 --max-train 10000   # one layer of 10^6 neurons
"""
from __future__ import annotations

import argparse
import gc
import platform
import sys
import time
import warnings
from pathlib import Path

import torch

from sparsebench.methods import RunConfig, Trainer
from sparsebench.methods.core.metrics import accuracy
from sparsebench.methods.data import DataInfo, Dataset

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
MiB = 2**20


def reset_peak_rss() -> int:
    Path("/proc/self/clear_refs").write_text("5")   # Linux: the peak (VmHWM) restarts from the current RSS
    return peak_rss()


def peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def random_data(n_train: int) -> Dataset:
    g = torch.Generator().manual_seed(0)
    n_eval = 200
    x = torch.rand(n_train + 2 * n_eval, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (len(x),), generator=g)
    info = DataInfo("random-mnist-shape", (1, 28, 28), 10, n_train, n_eval, n_eval, "random", "benchmark")
    return Dataset(x[:n_train], y[:n_train], x[n_train:-n_eval], y[n_train:-n_eval], x[-n_eval:], y[-n_eval:], info)


def one_epoch(tr: Trainer) -> tuple[float, float]:
    """(seconds of one epoch: training plus SET rewiring, the rewiring's share)."""
    t = time.perf_counter()
    tr.train_epoch()
    trained = time.perf_counter()
    tr.method.after_epoch(tr.model, tr.optimizer, 1)   # epoch 1 of many: SET rewires
    end = time.perf_counter()
    return end - t, (end - trained) / (end - t)


def measure(flat: dict, data: Dataset | None) -> dict:
    """Build, warm up one batch, train one epoch; peak RSS growth over all of it, and the epoch's time."""
    gc.collect()
    start = reset_peak_rss()
    t = time.perf_counter()
    tr = Trainer(RunConfig.from_flat(flat), data=data)
    built = time.perf_counter() - t
    b = tr.cfg.train.batch_size
    tr.train_step(tr.data.x_train[:b], tr.data.y_train[:b])        # warm-up
    seconds, rewire = one_epoch(tr)
    weights = sum(l.values.numel() if hasattr(l, "values") else int(l.mask.sum()) for l in tr.model.layers)
    return dict(tr=tr, build_s=built, epoch_s=seconds, rewire=rewire, peak=peak_rss() - start, weights=weights)


def sweep(a) -> None:
    data = random_data(a.train_size)
    print(f"width sweep: set, MLP 784-(W x {a.layers})-10, epsilon {a.epsilon:g}, {a.train_size} random MNIST-shaped "
          f"samples, batch {a.batch_size}; peak RSS growth and one epoch (train + rewiring)")
    for mode in ("sparse", "mask"):   # warm-up: the first use of each path loads code and allocator pools
        measure({"method": "set", "model.hidden": [64] * a.layers, "model.sparse_compute": mode,
                 "train.batch_size": a.batch_size}, data)
    for w in (int(v) for v in a.widths.split(",")):
        base = {"method": "set", "model.hidden": [w] * a.layers, "model.epsilon": a.epsilon,
                "train.batch_size": a.batch_size, "train.epochs": 1000}
        rows = {}
        for mode in ("sparse", "mask"):
            if mode == "mask" and w > a.mask_max:
                continue
            r = measure({**base, "model.sparse_compute": mode}, data)
            rows[mode] = r
            r.pop("tr")
            print(f"  W {w:7d} {mode:6s} weights {r['weights']:11,d}  peak RSS +{r['peak'] / MiB:9.1f} MiB  build "
                  f"{r['build_s']:7.2f} s  epoch {r['epoch_s']:8.2f} s  rewiring {r['rewire']:5.1%}", flush=True)
        if "mask" in rows:
            s, m = rows["sparse"], rows["mask"]
            print(f"  W {w:7d} sparse / mask: peak RSS {s['peak'] / m['peak']:.3f}x  epoch {s['epoch_s'] / m['epoch_s']:.3f}x")
        else:
            print(f"  W {w:7d} mask path not run (above --mask-max {a.mask_max}: its dense layers would need "
                  f"{(784 * w + (a.layers - 1) * w * w + 10 * w) * 13 / 2**30:.1f} GiB of weight, mask, gradient and momentum)")


def scale(a) -> None:
    hidden = [int(v) for v in a.scale.split(",")]
    flat = {"method": "set", "model.hidden": hidden, "model.epsilon": a.epsilon, "model.sparse_compute": "sparse",
            "train.batch_size": a.batch_size, "train.epochs": a.epochs + 1, "train.lr": a.lr,
            "data.dataset": "mnist", "data.max_train": a.max_train, "model.init": a.init}
    print(f"scale: set sparse, MLP 784-{'-'.join(map(str, hidden))}-10 ({sum(hidden):,d} hidden neurons), epsilon "
          f"{a.epsilon:g}, init {a.init}, MNIST (max_train {a.max_train or 'all'}), batch {a.batch_size}, lr {a.lr:g}", flush=True)
    r = measure(flat, None)
    tr = r.pop("tr")
    print(f"  weights {r['weights']:,d}  build {r['build_s']:.1f} s  epoch 1 {r['epoch_s']:.1f} s "
          f"(rewiring {r['rewire']:.1%})  peak RSS growth {r['peak'] / MiB:.0f} MiB", flush=True)
    d = tr.data
    # Small evaluation batches: the activations of a batch are batch x (hidden neurons) dense floats.
    test_acc = lambda: float(accuracy(tr.model, d.x_test, d.y_test, batch_size=250))  # noqa: E731
    print(f"  epoch 1: test accuracy {test_acc():.4f}", flush=True)
    for epoch in range(2, a.epochs + 1):
        s, rw = one_epoch(tr)
        print(f"  epoch {epoch} {s:.1f} s (rewiring {rw:.1%}): test accuracy {test_acc():.4f}", flush=True)
    print(f"  train samples {len(d.x_train)}, test samples {len(d.x_test)}; peak RSS of the process "
          f"{peak_rss() / MiB:.0f} MiB")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--widths", default="1000,10000,100000", help="hidden widths of the sweep")
    p.add_argument("--layers", type=int, default=3, help="hidden layers of the sweep")
    p.add_argument("--epsilon", type=float, default=20.0)
    p.add_argument("--train-size", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--mask-max", type=int, default=10_000, help="widest hidden layer the mask path is run at")
    p.add_argument("--scale", default="", help="hidden widths of the large run (instead of the sweep)")
    p.add_argument("--epochs", type=int, default=1, help="epochs of the large run")
    p.add_argument("--max-train", type=int, default=0, help="MNIST training samples of the large run (0: all)")
    p.add_argument("--lr", type=float, default=0.01)
    # N(0, 0.1^2), the NumPy SET code's: with nn.Linear's bound 1/sqrt(n_in) a unit of a few inputs out of 10^5-10^6
    # starts near 0 (on 50,000 units at epsilon 2, one epoch on 2,700 MNIST samples reached 0.23 test accuracy
    # with it and 0.75 with normal).
    p.add_argument("--init", default="normal", help="model.init of the large run")
    p.add_argument("--threads", type=int, default=1, help="torch threads (2 threads on 2 shared cores ran up to 40x slower: spinning)")
    a = p.parse_args(argv)
    if not sys.platform.startswith("linux"):
        print("sparse_scale: error: peak RSS is read from /proc (Linux only)", file=sys.stderr)
        return 2
    torch.set_num_threads(a.threads)
    print(f"sparse scale: torch {torch.__version__}, {platform.machine()}, threads {torch.get_num_threads()}")
    scale(a) if a.scale else sweep(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
