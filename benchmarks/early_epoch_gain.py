"""Paper A's early-epoch claim, measured: runs the protocol in workflows/papers/diversification.yaml in this
process (a pool of worker processes, one thread each) and prints, per dataset and hidden width, the test
accuracy after epochs 1-5 and at the end (mean +- std over seeds) of every arm, and each arm's relative gain
over the baseline arm with a paired bootstrap 95% confidence interval, next to the published value.

    SPARSEBENCH_DATA=/path/to/data python benchmarks/early_epoch_gain.py \
        --experiment early_epoch_init_tabular --workers 2 --out results/early_epoch.jsonl

Relative gain over epochs 1..5 = mean over seeds and epochs 1..5 of the arm's test accuracy divided by the
same mean of the baseline arm, minus 1 (our reading of the abstract's "first 5 epochs"). Seeds are paired:
the same seed gives both arms the same standard draw and the same data order. Finished runs are appended to
`--out` (JSON lines, keyed by config hash) and are not rerun, so the command can be interrupted and repeated.
"""
from __future__ import annotations

import argparse
import functools
import json
import multiprocessing as mp
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sparsebench.methods import DataConfig, RunConfig, Trainer, load_dataset  # noqa: E402

PROTOCOL = ROOT / "workflows" / "papers" / "diversification.yaml"
EARLY = 5          # "the first 5 epochs" (abstract)
BOOTSTRAP = 4000   # resamples of the paired seeds for the confidence interval


def cells(doc: dict, experiments: list[str] | None, datasets: list[str] | None, seeds: int | None,
          epochs: int | None, arms: list[str] | None):
    """Every run of the protocol: (key fields, flat config)."""
    for exp in doc["experiments"]:
        if experiments and exp["name"] not in experiments:
            continue
        sweep_key, sweep_values = next(iter(exp.get("sweep", {"_": [None]}).items()))
        for ds in exp.get("datasets") or [exp["dataset"]]:
            if datasets and ds not in datasets:
                continue
            for value in sweep_values:
                for arm, overrides in exp["methods"].items():
                    if arms and arm not in arms:
                        continue
                    overrides = dict(overrides)
                    method = overrides.pop("method", arm)
                    for seed in range(seeds or exp["seeds"]):
                        flat = {"method": method, "data.dataset": ds, "train.epochs": epochs or exp["epochs"],
                                "train.seed": seed, **exp.get("data", {}), **exp.get("common", {}), **overrides}
                        if value is not None:
                            flat[sweep_key] = value
                        key = {"experiment": exp["name"], "dataset": ds, "sweep": json.dumps(value), "arm": arm,
                               "seed": seed}
                        yield key, flat


@functools.lru_cache(maxsize=None)
def _data(name: str):
    return load_dataset(DataConfig(dataset=name))


def run_one(job):
    key, flat = job
    torch.set_num_threads(1)
    cfg = RunConfig.from_flat(flat)
    hist = Trainer(cfg, data=_data(cfg.data.dataset)).fit()
    return {**key, "hash": cfg.hash(), "test_acc": [m["test_acc"] for m in hist],
            "act_corr": [m["act_corr"] for m in hist], "weight_cos": [m["weight_cos"] for m in hist],
            "dead_units": [m["dead_units"] for m in hist], "seconds": hist[-1]["seconds"]}


def paired_gain(arm: np.ndarray, base: np.ndarray, rng: np.random.Generator) -> tuple[float, float, float]:
    """Relative gain of mean(arm) over mean(base) (rows = seeds, paired), with a bootstrap 95% interval."""
    gain = arm.mean() / base.mean() - 1
    idx = rng.integers(0, len(arm), size=(BOOTSTRAP, len(arm)))
    boot = arm[idx].mean(1) / base[idx].mean(1) - 1
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return float(gain), float(lo), float(hi)


def report(doc: dict, results: list[dict], order: list[tuple]) -> str:
    """Markdown tables, one per (experiment, dataset, sweep value), in the protocol's order."""
    rng = np.random.default_rng(0)
    lines = []
    by_exp = {e["name"]: e for e in doc["experiments"]}
    groups: dict[tuple, dict[str, dict[int, list[float]]]] = {}
    for r in results:
        groups.setdefault((r["experiment"], r["dataset"], r["sweep"]), {}).setdefault(r["arm"], {})[r["seed"]] = r
    for (exp_name, ds, sweep), arms in sorted(groups.items(), key=lambda kv: order.index(kv[0])):
        exp = by_exp[exp_name]
        published = {c["method"]: c for c in exp.get("published", [])}
        base_arm = next((c["baseline"] for c in exp.get("published", []) if c.get("baseline")), None)
        n_epochs = min(len(r["test_acc"]) for a in arms.values() for r in a.values())
        shown = list(range(1, min(EARLY, n_epochs) + 1))
        lines.append(f"\n### {exp_name}: {ds}, {next(iter(exp.get('sweep', {'-': 0})))} = {sweep}\n")
        head = " | ".join(f"ep {e}" for e in shown)
        lines.append(f"| arm | n | {head} | final (ep {n_epochs}) | act_corr ep 1 | gain ep 1-{shown[-1]} [95% CI] | "
                     f"gain per epoch 1-{shown[-1]} | published |")
        lines.append("|" + "---|" * (len(shown) + 7))
        for arm, seeds in arms.items():
            acc = np.array([seeds[s]["test_acc"][:n_epochs] for s in sorted(seeds)])
            corr1 = np.mean([seeds[s]["act_corr"][0] for s in seeds])
            row = " | ".join(f"{acc[:, e - 1].mean():.3f} ± {acc[:, e - 1].std(ddof=1) if len(acc) > 1 else 0:.3f}"
                                for e in shown)
            final = f"{acc[:, -1].mean():.3f} ± {acc[:, -1].std(ddof=1) if len(acc) > 1 else 0:.3f}"
            gain = "(baseline)" if arm == base_arm else "-"
            per_epoch = "-"
            if base_arm and arm != base_arm and base_arm in arms:
                common = sorted(set(seeds) & set(arms[base_arm]))
                a = np.array([np.mean(seeds[s]["test_acc"][:shown[-1]]) for s in common])
                b = np.array([np.mean(arms[base_arm][s]["test_acc"][:shown[-1]]) for s in common])
                g, lo, hi = paired_gain(a, b, rng)
                gain = f"{g:+.1%} [{lo:+.1%}, {hi:+.1%}]"
                per_epoch = ", ".join(
                    f"{np.mean([seeds[s]['test_acc'][e - 1] for s in common]) / np.mean([arms[base_arm][s]['test_acc'][e - 1] for s in common]) - 1:+.0%}"
                    for e in shown)
            pub = published.get(arm)
            pub_s = "-" if pub is None else ("unknown" if pub["value"] is None else f"+{pub['value']:.0%} ({pub['source']})")
            lines.append(f"| {arm} | {len(acc)} | {row} | {final} | {corr1:.3f} | {gain} | {per_epoch} | {pub_s} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--experiment", action="append", help="experiment name(s) of the protocol (default: all)")
    p.add_argument("--dataset", action="append", help="restrict to these datasets")
    p.add_argument("--arm", action="append", help="restrict to these arms")
    p.add_argument("--seeds", type=int, help="override the protocol's number of seeds")
    p.add_argument("--epochs", type=int, help="override the protocol's number of epochs")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("results/early_epoch.jsonl"))
    args = p.parse_args(argv)

    doc = yaml.safe_load(PROTOCOL.read_text())
    jobs = list(cells(doc, args.experiment, args.dataset, args.seeds, args.epochs, args.arm))
    results = run_jobs(jobs, run_one, args.out, args.workers)
    order = list(dict.fromkeys((j[0]["experiment"], j[0]["dataset"], j[0]["sweep"]) for j in jobs))
    print(report(doc, results, order))


def run_jobs(jobs: list, run_one, out: Path, workers: int, describe=None) -> list[dict]:
    """Run (key, flat config) jobs in a pool of `workers` processes, appending each result to the JSON-lines file
    `out`; jobs whose (experiment, config hash) is already there are not rerun. Returns the jobs' results."""
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {}
    if out.exists():
        for line in out.read_text().splitlines():
            r = json.loads(line)
            done[(r["experiment"], r["hash"])] = r
    keys = [(key["experiment"], RunConfig.from_flat(flat).hash()) for key, flat in jobs]
    todo = [j for j, k in zip(jobs, keys) if k not in done]
    print(f"{len(jobs)} runs, {len(jobs) - len(todo)} already in {out}", file=sys.stderr, flush=True)
    with out.open("a") as f, mp.get_context("spawn").Pool(workers) as pool:
        for i, r in enumerate(pool.imap_unordered(run_one, todo), 1):
            f.write(json.dumps(r) + "\n")
            f.flush()
            done[(r["experiment"], r["hash"])] = r
            if describe or i % 20 == 0 or i == len(todo):
                print(f"{i}/{len(todo)} " + (describe(r) if describe else "done"), file=sys.stderr, flush=True)
    return [done[k] for k in dict.fromkeys(keys) if k in done]


if __name__ == "__main__":
    main()
