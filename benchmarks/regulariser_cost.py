"""Cost of each decorrelation penalty relative to the plain training step at the same shape, plus the cost of
the diversity metrics (measured every epoch for every method) and of the decorrelated initialisation.

For each hidden width, a dense MLP and a `diversity` MLP per penalty (same shape, same batch) take turns,
`--steps` optimizer steps each per round for `--repeats` rounds, so drift of the machine hits all alike;
`Trainer.train_step` is timed (forward, CE, penalty, backward, step). Printed: median time per step and the
ratio to dense's median. The diversity metrics are timed as one call of `metrics.diversity` on the
evaluation batch (1 024 samples) and reported as a fraction of one training epoch over `--train-size`
samples; the decorrelated initialisation (100 Adam steps per hidden layer, the default) in plain-step
equivalents.

    python benchmarks/regulariser_cost.py                       # 784-H-10, H in 64,256,1000, batch 128
    python benchmarks/regulariser_cost.py --hidden 1000,1000 --threads 1
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time

import torch

from sparsebench.methods import RunConfig, Trainer, get_method, metrics
from sparsebench.methods.data import DataInfo, Dataset
from sparsebench.methods.nn.decorrelation import PENALTIES


def random_data(n: int, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n + 2048, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (len(x),), generator=g)
    return Dataset(x[:n], y[:n], x[n:n + 1024], y[n:n + 1024], x[n + 1024:], y[n + 1024:],
                   DataInfo("random-mnist-shape", (1, 28, 28), 10, n, 1024, 1024, "random", "benchmark"))


def time_steps(tr: Trainer, xb, yb, steps: int) -> float:
    t = time.perf_counter()
    for _ in range(steps):
        tr.train_step(xb, yb)
    return (time.perf_counter() - t) / steps


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden", default="64;256;1000", help="';'-separated shapes, each a ','-separated width list")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--train-size", type=int, default=54_000, help="samples of the epoch the metrics are compared to")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    data = random_data(4096)
    xb, yb = data.x_train[:a.batch_size], data.y_train[:a.batch_size]
    print(f"regulariser cost vs plain step: torch {torch.__version__}, {platform.machine()}, threads "
          f"{torch.get_num_threads()}, batch {a.batch_size}, {a.steps} steps x {a.repeats} rounds")
    for shape in a.hidden.split(";"):
        hidden = [int(h) for h in shape.split(",")]
        arms = {"dense": {"method": "dense"}}
        for pen in PENALTIES:
            arms[pen] = {"method": "diversity", "model.penalty": pen, "model.lam": 0.1}
        arms["act_pearson gated"] = {"method": "diversity", "model.penalty": "act_pearson", "model.lam": 0.1,
                                     "model.lam_schedule": "gated", "model.gate_threshold": 0.0}
        trainers = {}
        for name, flat in arms.items():
            cfg = RunConfig.from_flat({**flat, "model.hidden": hidden, "train.batch_size": a.batch_size,
                                       "train.lr": 0.01, "train.epochs": 10})
            trainers[name] = Trainer(cfg, data=data)
            time_steps(trainers[name], xb, yb, 5)  # warm-up
        times = {name: [] for name in arms}
        for r in range(a.repeats):
            for name in (list(arms) if r % 2 == 0 else list(arms)[::-1]):
                times[name].append(time_steps(trainers[name], xb, yb, a.steps))
        base = statistics.median(times["dense"])
        print(f"\nMLP 784-{'-'.join(map(str, hidden))}-10")
        for name in arms:
            med = statistics.median(times[name])
            print(f"  {name:18s} {med * 1e3:8.3f} ms/step  ratio to plain step {med / base:5.2f}")

        # Diversity metrics (every method, every epoch) vs one epoch of plain steps.
        dense = trainers["dense"]
        xe = metrics.eval_batch(data.x_val)
        reps = []
        for _ in range(a.repeats):
            t = time.perf_counter()
            metrics.diversity(dense.model, xe)
            reps.append(time.perf_counter() - t)
        epoch = base * (a.train_size / a.batch_size)
        print(f"  diversity metrics   {statistics.median(reps) * 1e3:8.3f} ms/epoch  = {statistics.median(reps) / epoch:.2%} "
              f"of a {a.train_size}-sample epoch")

        # Decorrelated initialisation (once per run) in plain-step equivalents.
        cfg = RunConfig.from_flat({"method": "dense", "model.hidden": hidden, "model.decor_init": "cosine"})
        method = get_method("dense")(cfg, data.info)
        reps = []
        for _ in range(3):
            torch.manual_seed(0)
            t0 = time.perf_counter()
            method.build()
            t1 = time.perf_counter()
            torch.manual_seed(0)
            method.make_model()
            reps.append((time.perf_counter() - t1) - (t1 - t0))
        init = statistics.median(reps)
        print(f"  decorrelated init   {init:8.3f} s once       = {init / base:.0f} plain steps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
