"""Truly sparse vs masked vs dense (issue 18): epoch time of `set` and `fixprob` with model.sparse_compute = mask and
= sparse, as ratios to `dense` measured alternately in the same process, and the per-layer crossover density below
which a CSR layer's forward + backward beats the masked dense layer's (what `auto` uses:
SPARSE_DENSITY_CROSSOVER in methods/families/set_prune.py).

An epoch here is `Trainer.train_epoch()` plus the method's `after_epoch` (SET rewiring), timed apart, on random
MNIST-shaped data; the epoch's metrics (the same for every variant, and they densify a sparse layer for the weight
diversity metrics) are left out, unlike benchmarks/method_epoch_time.py. After a warm-up epoch each, the variants
take turns for `--repeats` rounds and the median is reported. Shared cores make single ratios noisy: the same
command gave ratios 20-50% apart between runs on the 2 shared cores of the development machine.

    python benchmarks/sparse_compute.py                                    # 784-1000-1000-1000-10, eps 20 and 5
    python benchmarks/sparse_compute.py --epsilons 20 --repeats 3 --threads 2 --methods set
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
import warnings

import torch

from sparsebench.methods import RunConfig, Trainer
from sparsebench.methods.data import DataInfo, Dataset
from sparsebench.methods.core.metrics import structure
from sparsebench.methods.nn.layers import MaskedLinear
from sparsebench.methods.nn.sparse_linear import SparseLinear

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")


def layer_crossover(n_in: int, n_out: int, batch: int, densities, reps: int = 20) -> list[tuple[float, float]]:
    """(density, time of SparseLinear fwd+bwd / time of MaskedLinear fwd+bwd) for one layer shape."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, n_in, generator=g)
    out = []
    for d in densities:
        mask = torch.rand(n_out, n_in, generator=g) < d
        masked = MaskedLinear(n_in, n_out, mask=mask)
        sparse = SparseLinear.from_dense(masked.weight, masked.mask, masked.bias)
        times = [[], []]
        xr = x.clone().requires_grad_()
        for _ in range(3):  # alternating rounds, the fastest of each: shared cores stall single rounds
            for k, layer in enumerate((masked, sparse)):
                layer(xr).sum().backward()  # warm-up
                t = time.perf_counter()
                for _ in range(reps):
                    layer(xr).sum().backward()
                times[k].append(time.perf_counter() - t)
        out.append((d, min(times[1]) / min(times[0])))
    return out


def model_bytes(model: torch.nn.Module) -> int:
    """Bytes of the model's parameters and buffers (the CSR views included): what a layer stores, O(nnz) when sparse."""
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default="set,fixprob")
    p.add_argument("--hidden", default="1000,1000,1000")
    p.add_argument("--train-size", type=int, default=10_000)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--epsilons", default="20,5", help="ER epsilons (20: ~96%% sparse, 5: ~99%% at this shape)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--densities", default="0.01,0.02,0.05,0.1,0.2", help="per-layer crossover scan (1000 x 1000)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    hidden = [int(h) for h in a.hidden.split(",")]
    methods = a.methods.split(",")
    for m in methods:
        if m not in ("set", "fixprob"):
            print(f"sparse_compute: error: method {m!r} has no model.sparse_compute; allowed: set, fixprob", file=sys.stderr)
            return 2

    print(f"sparse compute: torch {torch.__version__}, {platform.machine()}, threads {torch.get_num_threads()}")
    print(f"per-layer fwd+bwd, 1000x1000, batch {a.batch_size}: time of CSR layer / masked dense layer")
    for d, r in layer_crossover(1000, 1000, a.batch_size, [float(v) for v in a.densities.split(",")]):
        print(f"  density {d:5.3f}  ratio {r:5.2f}")

    g = torch.Generator().manual_seed(0)
    n_eval = 1000
    x = torch.rand(a.train_size + 2 * n_eval, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (len(x),), generator=g)
    data = Dataset(x[:a.train_size], y[:a.train_size], x[a.train_size:-n_eval], y[a.train_size:-n_eval], x[-n_eval:],
                   y[-n_eval:], DataInfo("random-mnist-shape", (1, 28, 28), 10, a.train_size, n_eval, n_eval, "random", "benchmark"))
    base = {"model.hidden": hidden, "train.batch_size": a.batch_size, "train.epochs": 10_000}
    variants = {"dense": {"method": "dense", **base}}
    for eps in (float(e) for e in a.epsilons.split(",")):
        for m in methods:
            for mode in ("mask", "sparse"):
                variants[f"{m}/{mode}/eps{eps:g}"] = {"method": m, "model.epsilon": eps, "model.sparse_compute": mode, **base}
    trainers = {}
    for name, flat in variants.items():
        trainers[name] = Trainer(RunConfig.from_flat(flat), data=data)
        trainers[name].train_epoch()  # warm-up
    times = {name: [] for name in trainers}
    rewire = {name: [] for name in trainers}
    names = list(trainers)
    for r in range(a.repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            tr = trainers[name]
            t = time.perf_counter()
            tr.train_epoch()
            t_train = time.perf_counter()
            tr.method.after_epoch(tr.model, tr.optimizer, 1)   # epoch 1 of 10 000: SET rewires
            times[name].append(time.perf_counter() - t)
            rewire[name].append(time.perf_counter() - t_train)
    print(f"epoch time (train + rewiring) vs dense: MLP 784-{'-'.join(map(str, hidden))}-10, {a.train_size} samples, "
          f"batch {a.batch_size}, repeats {a.repeats}")
    # The fastest round too: on shared cores a burst of other jobs slows whole epochs, and the minimum is the
    # round least disturbed (variants of equal work, e.g. set/sparse and fixprob/sparse, agree best on it).
    dense, dense_min = statistics.median(times["dense"]), min(times["dense"])
    for name in names:
        med, low = statistics.median(times[name]), min(times[name])
        h = structure(trainers[name].model)
        print(f"  {name:22s} median {med:7.3f} s  ratio {med / dense:5.2f}  min {low:7.3f} s  ratio {low / dense_min:5.2f}  "
              f"rewiring {statistics.median(rewire[name]) / med:5.1%}"
              f"  weight_sparsity {h['weight_sparsity']:.4f}  model storage {model_bytes(trainers[name].model) / 2**20:6.2f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
