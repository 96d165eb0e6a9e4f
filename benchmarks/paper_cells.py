"""Run the cells of a paper protocol (workflows/papers/<paper>.yaml) in this process and print, per experiment
and swept value, each arm's final test accuracy (mean +- std over seeds), its ratio to the experiment's baseline
arm, the measured parameter ratio rho = params_trainable / baseline's, and the published value; for runs with a
post-training pruning curve (train.prune_curve), accuracy per removed percentage.

    SPARSEBENCH_DATA=/path/to/data python benchmarks/paper_cells.py spectral \
        --experiment less_parameters_mnist --epochs 5 --seeds 2 --out results/spectral.jsonl

A measurement tool until `sparsebench reproduce` (issue 3) runs protocols through Ray and MLflow: finished runs
are appended to `--out` (JSON lines, keyed by config hash) and not rerun, so the command can be interrupted.
`--epochs` and `--max-train` shrink a protocol to this machine's budget and are printed with the tables.
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from early_epoch_gain import cells, run_jobs  # noqa: E402  (benchmarks/ is this script's directory)

from sparsebench.methods import DataConfig, RunConfig, Trainer, load_dataset  # noqa: E402


@functools.lru_cache(maxsize=None)
def _data(name: str, max_train: int):
    return load_dataset(DataConfig(dataset=name, max_train=max_train))


def run_one(job):
    key, flat = job
    torch.set_num_threads(1)
    cfg = RunConfig.from_flat(flat)
    hist = Trainer(cfg, data=_data(cfg.data.dataset, cfg.data.max_train)).fit()
    last = hist[-1]
    return {**key, "hash": cfg.hash(), "test_acc": last["test_acc"], "val_acc": last["val_acc"],
            "params_trainable": last["params_trainable"], "params_dense": last["params_dense"],
            "weight_sparsity": last["weight_sparsity"], "hoyer": last["hoyer"], "seconds": last["seconds"], "epochs": len(hist),
            "pruning": last.get("pruning")}


def _ms(values) -> str:
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.4f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.4f}"


def report(doc: dict, results: list[dict], order: list[tuple]) -> str:
    lines = []
    by_exp = {e["name"]: e for e in doc["experiments"]}
    groups: dict[tuple, dict[str, list[dict]]] = {}
    for r in results:
        groups.setdefault((r["experiment"], r["dataset"], r["sweep"]), {}).setdefault(r["arm"], []).append(r)
    for (exp_name, ds, sweep), arms in sorted(groups.items(), key=lambda kv: order.index(kv[0])):
        exp = by_exp[exp_name]
        base = next((c["baseline"] for c in exp.get("published", []) if c.get("baseline")), None)
        epochs = sorted({r["epochs"] for rs in arms.values() for r in rs})
        lines.append(f"\n### {exp_name}: {ds}, {next(iter(exp.get('sweep', {'-': 0})))} = {sweep} (epochs {epochs})\n")
        lines.append("| arm | n | test_acc | / baseline | params_trainable | rho | weight_sparsity | s/epoch |")
        lines.append("|---|---|---|---|---|---|---|---|")
        b = arms.get(base)
        for arm, rs in arms.items():
            rel = rho = "-"
            if b:
                rel = f"{np.mean([r['test_acc'] for r in rs]) / np.mean([r['test_acc'] for r in b]):.4f}"
                rho = f"{rs[0]['params_trainable'] / b[0]['params_trainable']:.4f}"
            lines.append(f"| {arm} | {len(rs)} | {_ms([r['test_acc'] for r in rs])} | {rel} | {rs[0]['params_trainable']}"
                         f" | {rho} | {np.mean([r['weight_sparsity'] for r in rs]):.3f}"
                         f" | {np.mean([r['seconds'] / r['epochs'] for r in rs]):.2f} |")
        curves = {arm: rs for arm, rs in arms.items() if rs[0].get("pruning")}
        if curves:
            percents = next(iter(curves.values()))[0]["pruning"]["percent"]
            lines.append("\n| arm | " + " | ".join(f"{q}%" for q in percents) + " |")
            lines.append("|---|" + "---|" * len(percents))
            for arm, rs in curves.items():
                acc = np.array([r["pruning"]["test_acc"] for r in rs])
                lines.append(f"| {arm} | " + " | ".join(_ms(acc[:, j]) for j in range(len(percents))) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("paper", help="protocol file stem under workflows/papers/")
    p.add_argument("--experiment", action="append", help="experiment name(s) of the protocol (default: all)")
    p.add_argument("--dataset", action="append", help="restrict to these datasets")
    p.add_argument("--arm", action="append", help="restrict to these arms")
    p.add_argument("--seeds", type=int, help="override the protocol's number of seeds")
    p.add_argument("--epochs", type=int, help="override the protocol's number of epochs")
    p.add_argument("--max-train", type=int, default=0, help="data.max_train of every run (0: the protocol's)")
    p.add_argument("--sweep", action="append", metavar="JSON", help="run only these values of the swept setting")
    p.add_argument("--set", action="append", default=[], metavar="KEY=JSON", help="override a flat key in every run")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)

    doc = yaml.safe_load((ROOT / "workflows" / "papers" / f"{args.paper}.yaml").read_text())
    overrides = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    if args.max_train:
        overrides["data.max_train"] = args.max_train
    jobs = [(key, {**flat, **overrides})
            for key, flat in cells(doc, args.experiment, args.dataset, args.seeds, args.epochs, args.arm)
            if not args.sweep or key["sweep"] in {json.dumps(json.loads(v)) for v in args.sweep}]
    results = run_jobs(jobs, run_one, args.out, args.workers, describe=lambda r: (
        f"{r['experiment']} {r['arm']} {r['sweep']} seed {r['seed']}: test_acc {r['test_acc']:.4f} ({r['seconds']:.0f} s)"))
    order = list(dict.fromkeys((j[0]["experiment"], j[0]["dataset"], j[0]["sweep"]) for j in jobs))
    print(f"overrides: epochs={args.epochs or 'protocol'} seeds={args.seeds or 'protocol'} {overrides}")
    print(report(doc, results, order))


if __name__ == "__main__":
    main()
