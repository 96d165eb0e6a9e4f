"""Cost of an LpSGD step relative to SGD on the same model, measured alternately in one process.

Times `optimizer.step()` alone and a whole training step (forward, backward, step) for the same MLP with the
same data: torch.optim.SGD (Nesterov momentum) vs LpSGD with every hidden layer on the unit Lp sphere, and the
LpSS topology update (one `update_topology` call, which runs every `frequency` steps) vs one SGD step.

    python benchmarks/lpsgd_step.py [--hidden 1000,1000] [--batch-size 256] [--p 1.07] [--threads 0]
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from methods.lpsgd import LpSGD
from methods.models import MLP


def timed(fn, repeats: int) -> float:
    fn()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return statistics.median(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hidden", default="1000,1000")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--p", type=float, default=1.07)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    widths = (784, *[int(h) for h in a.hidden.split(",")], 10)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(a.batch_size, 784, generator=g), torch.randint(0, 10, (a.batch_size,), generator=g)

    def make(lp: bool):
        torch.manual_seed(0)
        model = MLP(widths, batchnorm=True)
        if not lp:
            return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
        hidden = [l.weight for l in model.layers[:-1]]
        ids = {id(w) for w in hidden}
        groups = [{"params": [w], "lp": a.p, "lr": 0.1 / a.batch_size} for w in hidden]
        groups.append({"params": [q for q in model.parameters() if id(q) not in ids], "lp": None})
        return model, LpSGD(groups, lr=0.1, momentum=0.9, nesterov=True)

    results = {}
    for name, lp in (("sgd", False), ("lpsgd", True)):
        model, opt = make(lp)

        def train_step():
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()

        train_step()
        results[name] = (timed(opt.step, a.repeats), timed(train_step, a.repeats))
    # The topology update of lp_sphere on the same widths (SemiMaskedLinear layers, dense gradients captured).
    from methods.config import RunConfig
    from methods.data import DataInfo
    from methods.lp_sphere import LpSphere

    cfg = RunConfig.from_flat({"method": "lp_sphere", "model.hidden": list(widths[1:-1]), "model.p": [a.p],
                               "train.batch_size": a.batch_size, "train.nesterov": True})
    method = LpSphere(cfg, DataInfo("bench", (784,), 10, 10_000, 1000, 1000, "random", "benchmark"))
    model = method.make_model()
    opt = method.optimizer(model)
    for layer in model.layers:
        layer.capture = True
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.step()
    topo = timed(lambda: method.update_topology(model, opt, 3), a.repeats)

    print(f"LpSGD vs SGD: torch {torch.__version__}, {platform.machine()}, threads {torch.get_num_threads()}, "
          f"MLP {'-'.join(map(str, widths))} + BatchNorm, batch {a.batch_size}, p {a.p}, median of {a.repeats}")
    s_step, s_train = results["sgd"]
    l_step, l_train = results["lpsgd"]
    print(f"  optimizer.step   SGD {s_step * 1e3:7.2f} ms   LpSGD {l_step * 1e3:7.2f} ms   ratio {l_step / s_step:5.2f}")
    print(f"  training step    SGD {s_train * 1e3:7.2f} ms   LpSGD {l_train * 1e3:7.2f} ms   ratio {l_train / s_train:5.2f}")
    print(f"  topology update  {topo * 1e3:7.2f} ms = {topo / s_train:5.2f} SGD training steps "
          f"(once every model.frequency steps: 40 in the authors' runs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
