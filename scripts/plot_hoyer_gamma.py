"""Hoyer sparsity vs p: the Gamma-hypothesis prediction (methods/core/hoyer_gamma.py) for the fan-ins of Paper D's
draft Fig. 6 (25, 144, 288, 3136, 512, 64), against the per-layer Hoyer of that MNIST conv net trained with LpSGD.

    SPARSEBENCH_DATA=/path/to/datasets python scripts/plot_hoyer_gamma.py --out results/lp_sphere/hoyer_gamma \
        [--p 1.1 1.2 1.3 1.5 2 3 4 6] [--epochs 2] [--max-train 10000] [--no-train]

Writes <out>.png (one panel per layer: eq. (2) at k = 0.5 / 1 / 2, drawn clipped at 1, the Monte-Carlo finite-fan-in expectation at
k = 1, the measured points) and <out>.csv (p, layer, fan-in, measured Hoyer, predictions, test accuracy).

The net is the one the figure's labels imply (arXiv 2103.16013 draft Fig. 6, recovered from the authors' repository
WilliamLiPro/LpSS history; see docs/methods.md): conv 5x5 1->16, max-pool, conv 3x3 16->32, max-pool, conv 3x3 32->64,
FC 3136->512, FC 512->64, FC 64->10. Its training settings are unknown; ours: BatchNorm after every hidden layer (as
the authors' networks), every one of the six weight tensors on the unit Lp sphere (the figure plots all six),
LpSGD (methods/nn/lpsgd.py, the authors' LpCGD.step) with mixing rate 0.02, Nesterov 0.9, batch 64, no topology
evolution (the figure is about p, not masks), one torch thread.
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import torch
from torch import nn

from sparsebench.methods import DataConfig, load_dataset
from sparsebench.methods.core.hoyer_gamma import expected_hoyer, monte_carlo
from sparsebench.methods.core.metrics import hoyer_rows
from sparsebench.methods.nn.lpsgd import LpSGD

FAN_INS = (25, 144, 288, 3136, 512, 64)       # "Layer 1, dim=25" ... "Layer 6, dim=64" of the draft Fig. 6
P_GRID = (1.1, 1.2, 1.3, 1.5, 2.0, 3.0, 4.0, 6.0)


def fig6_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 16, 5, padding=2), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.Flatten(),
        nn.Linear(3136, 512), nn.BatchNorm1d(512), nn.ReLU(),
        nn.Linear(512, 64), nn.BatchNorm1d(64), nn.ReLU(),
        nn.Linear(64, 10))


def weights(net: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in net if isinstance(m, (nn.Conv2d, nn.Linear))]


def train_one(p: float, data, epochs: int, seed: int = 0, lr: float = 0.02, batch: int = 64) -> dict:
    torch.manual_seed(seed)
    net = fig6_net()
    ws = weights(net)
    assert [w[0].numel() for w in ws] == list(FAN_INS)
    rest = [q for q in net.parameters() if all(q is not w for w in ws)]
    opt = LpSGD([{"params": ws, "lp": p}, {"params": rest}], lr=lr, momentum=0.9, nesterov=True)
    x, y = data.x_train.view(-1, 1, 28, 28), data.y_train
    loss_fn = nn.CrossEntropyLoss()
    start = time.perf_counter()
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed * 1000 + epoch))
        for i in range(0, len(x) - batch + 1, batch):
            idx = order[i:i + batch]
            opt.zero_grad(set_to_none=True)
            loss_fn(net(x[idx]), y[idx]).backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        xt = data.x_test.view(-1, 1, 28, 28)
        acc = sum(int((net(xt[i:i + 2000]).argmax(1) == data.y_test[i:i + 2000]).sum()) for i in range(0, len(xt), 2000))
    return {"hoyer": [float(hoyer_rows(w).mean()) for w in ws], "test_acc": acc / len(xt),
            "seconds": time.perf_counter() - start}


def plot(rows: list[dict], grid: list[float], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fine = np.linspace(1.05, 6.0, 120)
    fig, axes = plt.subplots(2, 3, figsize=(12, 7), sharey=True)
    for i, (ax, d) in enumerate(zip(axes.flat, FAN_INS)):
        for k, style in ((0.5, ":"), (1.0, "-"), (2.0, "--")):
            ax.plot(fine, [min(expected_hoyer(p, d, k), 1.0) for p in fine], style, color="C0",
                    label=f"eq. (2), k = {k:g}")
        ax.plot(grid, [monte_carlo(p, d, 1.0, rows=max(100, 100_000 // d))[0] for p in grid], "s", color="C0",
                mfc="none", label="Monte Carlo, k = 1")
        measured = [(r["p"], r["hoyer"]) for r in rows if r["layer"] == i + 1 and r["hoyer"] != ""]
        if measured:
            ax.plot(*zip(*measured), "o", color="C3", label="trained (LpSGD)")
        ax.set_title(f"Layer {i + 1}, dim={d}")
        ax.set_xlabel("p")
        ax.set_ylim(0, 1.02)
    axes[0, 0].set_ylabel("Hoyer sparsity")
    axes[1, 0].set_ylabel("Hoyer sparsity")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Hoyer sparsity vs p: Gamma hypothesis (eq. 2 of methods/core/hoyer_gamma.py) vs trained Fig. 6 net")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="hoyer_gamma", help="output path without suffix (.png and .csv are written)")
    ap.add_argument("--p", type=float, nargs="+", default=list(P_GRID))
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--max-train", type=int, default=10000)
    ap.add_argument("--no-train", action="store_true", help="only the predictions (no MNIST needed)")
    args = ap.parse_args(argv)
    if any(p <= 1 for p in args.p):
        print(f"plot_hoyer_gamma: every --p must be > 1, got {args.p}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    data = None if args.no_train else load_dataset(DataConfig(dataset="mnist", max_train=args.max_train))
    rows = []
    for p in args.p:
        res = None if data is None else train_one(p, data, args.epochs)
        if res:
            print(f"p={p:g}: test_acc {res['test_acc']:.4f}, Hoyer per layer "
                  + " ".join(f"{h:.3f}" for h in res["hoyer"]) + f" ({res['seconds']:.0f} s)", flush=True)
        for i, d in enumerate(FAN_INS):
            mc, se = monte_carlo(p, d, 1.0, rows=max(100, 100_000 // d))
            rows.append({"p": p, "layer": i + 1, "fan_in": d, "hoyer": "" if res is None else round(res["hoyer"][i], 4),
                         "eq2_k1": round(expected_hoyer(p, d), 4), "monte_carlo_k1": round(mc, 4),
                         "test_acc": "" if res is None else round(res["test_acc"], 4),
                         "epochs": "" if res is None else args.epochs, "max_train": "" if res is None else args.max_train})
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, args.p, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.png')} and {out.with_suffix('.csv')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
