"""Epoch time of every method relative to `dense` at the same widths, measured alternately in one run.

Each method trains the same MLP shape on the same in-memory random data (MNIST-shaped, 784 inputs) with the
same optimizer and batch size; `Trainer.run_epoch()` is timed, so a method's per-epoch topology work (SET
rewiring, neuron pruning) and the masked forward (W * M) are included. After one warm-up epoch each, the
methods take turns, epoch by epoch, for `--repeats` rounds, so drift of the machine hits all alike; the
median epoch time and the ratio to dense's median are printed.

    python benchmarks/method_epoch_time.py                      # 784-1000-1000-10, 10 000 samples
    python benchmarks/method_epoch_time.py --methods dense,set --hidden 1000,1000,1000 --threads 1
    python benchmarks/method_epoch_time.py --methods dense,spectral --hidden 100 --batch-size 200   # Paper C shape
    python benchmarks/method_epoch_time.py --methods spectral_sparse,dense_sparse --hidden 500,500 --batch-size 200 [--kth torch|none]
    python benchmarks/method_epoch_time.py --device cuda          # the same ratios on a GPU
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time

import torch

from sparsebench.methods import RunConfig, Trainer, get_method, list_methods
from sparsebench.methods.core.train import resolve_device
from sparsebench.methods.data import DataInfo, Dataset


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default="dense,fixprob,set,set_neuron")
    p.add_argument("--hidden", default="1000,1000")
    p.add_argument("--train-size", type=int, default=10_000)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    p.add_argument("--epsilon", type=float, default=20.0)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (the dataset is moved there, as in a trial)")
    p.add_argument("--kth", choices=("auto", "torch", "none"), default="auto",
                   help="dynamic sparsification's selection: auto (numpy on CPU), torch.kthvalue everywhere, or none "
                        "(a fixed threshold, not the method: what the epoch costs without the selection)")
    a = p.parse_args(argv)
    methods = a.methods.split(",")
    for m in methods:
        if m not in list_methods():
            print(f"method_epoch_time: error: unknown method {m!r}; registered: {', '.join(list_methods())}", file=sys.stderr)
            return 2
    if "dense" not in methods:
        methods.insert(0, "dense")
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.kth == "torch":  # the reference the numpy selection is measured against (methods/nn/spectral_layers.py)
        import sparsebench.methods.nn.spectral_layers as sl
        sl.kth_smallest = lambda t, k: torch.kthvalue(t.reshape(-1), k).values
    elif a.kth == "none":  # the selection's share of the epoch: the rest (W * mask, the QR product) stays
        import sparsebench.methods.nn.spectral_layers as sl
        sl.kth_smallest = lambda t, k: t.reshape(-1)[0]
    hidden = [int(h) for h in a.hidden.split(",")]
    device = resolve_device(a.device)

    def sync() -> None:  # CUDA is asynchronous: start and stop the clock on an idle device
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    g = torch.Generator().manual_seed(0)
    n_eval = 1000
    x = torch.rand(a.train_size + 2 * n_eval, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (len(x),), generator=g)
    data = Dataset(x[:a.train_size], y[:a.train_size], x[a.train_size:-n_eval], y[a.train_size:-n_eval], x[-n_eval:], y[-n_eval:],
                   DataInfo("random-mnist-shape", (1, 28, 28), 10, a.train_size, n_eval, n_eval, "random", "benchmark"))

    trainers = {}
    for m in methods:
        flat = {"method": m, "model.hidden": hidden, "train.batch_size": a.batch_size, "train.epochs": 10_000}
        if "epsilon" in get_method(m).Config.keys():
            flat["model.epsilon"] = a.epsilon
        if m == "set_neuron":  # a pruning round every epoch: the worst case of its per-epoch work
            flat.update({"model.prune_start": 1, "model.prune_every": 1, "model.prune_percentile": 1.0})
        trainers[m] = Trainer(RunConfig.from_flat(flat), device, data=data)
        trainers[m].run_epoch()  # warm-up

    times = {m: [] for m in methods}
    for r in range(a.repeats):
        order = methods if r % 2 == 0 else methods[::-1]
        for m in order:
            sync()
            t = time.perf_counter()
            trainers[m].run_epoch()
            sync()
            times[m].append(time.perf_counter() - t)

    print(f"method epoch time vs dense: torch {torch.__version__}, {platform.machine()}, {device}, threads {torch.get_num_threads()}, "
          f"MLP 784-{'-'.join(map(str, hidden))}-10, {a.train_size} samples, batch {a.batch_size}, epsilon {a.epsilon}, "
          f"repeats {a.repeats}")
    base = statistics.median(times["dense"])
    for m in methods:
        med = statistics.median(times[m])
        nnz = trainers[m].history[-1]["weights_nonzero"]
        print(f"  {m:12s} median {med:7.3f} s  min {min(times[m]):7.3f} s  ratio to dense {med / base:5.2f}  "
              f"weights_nonzero {nnz}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
