"""Cost of an LpSGD step relative to SGD on the same model, measured alternately in one process.

Times `optimizer.step()` alone and a whole training step (forward, backward, step) for the same network with the
same data: torch.optim.SGD (Nesterov momentum) vs LpSGD with the layers lp_sgd constrains on the unit Lp sphere,
and the LpSS topology update (one `update_topology` call, which runs every `frequency` steps) vs one SGD step.
SGD and LpSGD are timed alternately, repeat after repeat, so that a change of machine load hits both alike; the
ratios are of medians. Several networks (comma-separated --arch) run in one process.

    python benchmarks/lpsgd_step.py [--arch mlp,wrn12 (mlp|wrn12|wrn18|wrn22_2|wrn22_4)] [--hidden 1000,1000]
                                    [--batch-size 256] [--p 1.07] [--repeats 30] [--threads 0] [--device cuda]
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F

DEVICE = torch.device("cpu")


def sync() -> None:
    if DEVICE.type == "cuda":  # CUDA is asynchronous: start and stop the clock on an idle device
        torch.cuda.synchronize(DEVICE)


def once(fn) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def timed(fn, repeats: int) -> float:
    fn()
    return statistics.median(once(fn) for _ in range(repeats))


def timed_alternately(fns: dict, repeats: int) -> dict:
    """Median seconds of every function, the functions called in turn within each repeat."""
    for fn in fns.values():
        fn()
    out: dict = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            out[k].append(once(fn))
    return {k: statistics.median(v) for k, v in out.items()}


def build(method_name: str, a, shape: tuple[int, ...]):
    """The registered method's own model and optimizer (methods/families/lp_sphere.py: which layers are constrained)."""
    from sparsebench.methods.core.config import RunConfig
    from sparsebench.methods.data import DataInfo
    from sparsebench.methods.core.registry import get_method

    flat = {"method": method_name, "model.arch": a.arch, "model.p": [a.p], "train.batch_size": a.batch_size,
            "train.nesterov": True, "train.lr": 0.1}
    if a.arch == "mlp":
        flat["model.hidden"] = [int(h) for h in a.hidden.split(",")]
    cfg = RunConfig.from_flat(flat)
    torch.manual_seed(0)
    method = get_method(method_name)(cfg, DataInfo("bench", shape, 10, 10_000, 1000, 1000, "random", "benchmark"))
    model = method.make_model().to(DEVICE)
    return cfg, method, model


def bench(a, arch: str) -> None:
    a = argparse.Namespace(**{**vars(a), "arch": arch})
    shape = (784,) if a.arch == "mlp" else (1, 28, 28) if a.arch in ("wrn12", "wrn18") else (3, 32, 32)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(a.batch_size, *shape, generator=g).to(DEVICE)
    y = torch.randint(0, 10, (a.batch_size,), generator=g).to(DEVICE)

    steps, trains = {}, {}
    for name in ("sgd", "lpsgd"):
        # The same network (lp_sgd's: BatchNorm after every hidden layer) with the same initial weights.
        _, method, model = build("lp_sgd", a, shape)
        opt = (method.optimizer(model) if name == "lpsgd"
               else torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True))

        def train_step(model=model, opt=opt):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()

        train_step()
        steps[name], trains[name] = opt.step, train_step
    step = timed_alternately(steps, a.repeats)
    train = timed_alternately(trains, a.repeats)
    # The topology update of lp_sphere on the same network (semi-masked layers, dense gradients captured).
    _, method, model = build("lp_sphere", a, shape)
    opt = method.optimizer(model)
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.step()
    topo = timed(lambda: method.update_topology(model, opt, 3), a.repeats)

    net = (f"MLP 784-{a.hidden.replace(',', '-')}-10 + BatchNorm" if a.arch == "mlp"
           else f"{a.arch} on {'x'.join(map(str, shape))}")
    n_lp = sum(p.numel() for grp in opt.param_groups if grp["lp"] is not None for p in grp["params"])
    n_all = sum(p.numel() for p in model.parameters())
    print(f"LpSGD vs SGD: torch {torch.__version__}, {platform.machine()}, {DEVICE}, threads {torch.get_num_threads()}, "
          f"{net} ({n_lp}/{n_all} parameters on the sphere), batch {a.batch_size}, p {a.p}, median of {a.repeats}")
    print(f"  optimizer.step   SGD {step['sgd'] * 1e3:7.2f} ms   LpSGD {step['lpsgd'] * 1e3:7.2f} ms   "
          f"ratio {step['lpsgd'] / step['sgd']:5.2f}")
    print(f"  training step    SGD {train['sgd'] * 1e3:7.2f} ms   LpSGD {train['lpsgd'] * 1e3:7.2f} ms   "
          f"ratio {train['lpsgd'] / train['sgd']:5.2f}")
    print(f"  topology update  {topo * 1e3:7.2f} ms = {topo / train['sgd']:5.2f} SGD training steps "
          f"(once every model.frequency steps: 40 in the authors' runs)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="mlp", help="comma-separated: mlp (--hidden) or a wide ResNet: wrn12, wrn18, "
                                                  "wrn22_2, wrn22_4")
    ap.add_argument("--hidden", default="1000,1000")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--p", type=float, default=1.07)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    a = ap.parse_args(argv)
    global DEVICE
    DEVICE = torch.device(a.device)
    if a.threads:
        torch.set_num_threads(a.threads)
    for arch in a.arch.split(","):
        bench(a, arch)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
