"""The decorrelated initialisation (methods/nn/decorrelation.py) on typical layer shapes: mean and max |cosine|
between rows before and after, for a grid of step counts and Adam rates, and the time it takes. This is where
the defaults of `model.decor_steps` / `model.decor_lr` (methods/families/dense.py) come from: Paper A's values are
unknown (only its abstract has been read; docs/methods.md, "Notes on reconstructions").

    python benchmarks/decor_init.py
    python benchmarks/decor_init.py --shapes 1000x784,128x64 --steps 50,100,200 --lrs 0.02,0.05,0.1
"""
from __future__ import annotations

import argparse
import platform
import sys
import time

import torch
from torch import nn

from sparsebench.methods.nn.decorrelation import decorrelate_rows_
from sparsebench.methods.core.metrics import mean_abs_cosine


def row_stats(w: torch.Tensor) -> tuple[float, float]:
    u = nn.functional.normalize(w.double(), dim=1)
    g = (u @ u.T).abs().triu(1)
    return mean_abs_cosine(w.double())[0].item(), g.max().item()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", default="8x784,64x784,1000x784,16x617,32x64,64x64,128x64,1000x64",
                   help="rows x columns (units x inputs) of the hidden layers to try")
    p.add_argument("--steps", default="25,50,100,200")
    p.add_argument("--lrs", default="0.02,0.05,0.1")
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"decorrelated init: torch {torch.__version__}, {platform.machine()}, threads {torch.get_num_threads()}; "
          f"cells: mean |cos| / max |cos| after (seconds)")
    for shape in a.shapes.split(","):
        rows, cols = (int(v) for v in shape.split("x"))
        torch.manual_seed(0)
        w0 = nn.Linear(cols, rows).weight.detach().clone()
        mean0, max0 = row_stats(w0)
        print(f"\n{rows}x{cols}: standard init mean {mean0:.4f} max {max0:.3f}")
        for lr in (float(v) for v in a.lrs.split(",")):
            cells = []
            for steps in (int(v) for v in a.steps.split(",")):
                w = w0.clone()
                t = time.perf_counter()
                decorrelate_rows_(w, steps, lr)
                dt = time.perf_counter() - t
                m, mx = row_stats(w)
                cells.append(f"{steps:4d} steps {m:.4f}/{mx:.3f} ({dt:.2f}s)")
            print(f"  lr {lr:<5} " + "  ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
