"""Trials per GPU (issue 20): the same study of small-MLP trials with one trial per GPU, then packed with a
fractional `--gpus-per-trial`, as aggregate trials per hour and the concurrency the study reached.

Each study is the real `sparsebench search` (workflows/search.py: local Ray, Optuna, ASHA with a grace period equal
to the epochs so that no trial stops early, MLflow on SQLite in a temporary folder) on a fixed dense MLP
(orchestration.py's `dense_study`); only the resource request differs. Ray admits as many trials at once
as the fractions fit on the GPUs (and CPUs: one per trial by default), so `--fractions 1,0.125` on one GPU runs one
trial at a time, then eight. What is measured, from the MLflow runs the studies wrote:
- trials per hour = trials / wall time of `search()` x 3600, and its ratio to the first fraction's;
- the most trials running at once (overlap of the runs' start and end times), the check that packing happened;
- the median trial's own training seconds, to see what sharing the GPU costs each trial.

`--resource cpu` packs fractional CPUs instead (no GPU needed): the script's own check on a CPU-only machine.

    python benchmarks/gpu_packing.py                                  # on a GPU machine: 16 trials, fractions 1 and 0.125
    python benchmarks/gpu_packing.py --resource cpu --fractions 1,0.5 --trials 4 --epochs 2     # a CPU-only check
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # orchestration.py beside this file
from orchestration import dense_study  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=16)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--fractions", default="1,0.125", help="comma-separated resource fraction per trial, one study "
                                                           "each; the first is the baseline")
    p.add_argument("--resource", choices=("gpu", "cpu"), default="gpu")
    p.add_argument("--cpus-per-trial", type=float, default=1.0, help="with --resource gpu")
    p.add_argument("--hidden", default="256,256")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--dataset", default="digits")
    return p.parse_args(argv)


def most_at_once(spans: list[tuple[int, int]]) -> int:
    """The largest number of [start, end) intervals that overlap."""
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])  # an end sorts before a start at a tie
    best = cur = 0
    for _, step in events:
        cur += step
        best = max(best, cur)
    return best


def measure(uri: str, experiment: str) -> dict:
    from mlflow.tracking import MlflowClient

    from sparsebench.workflows import tracking

    c = MlflowClient(tracking_uri=uri)
    exp = c.get_experiment_by_name(experiment)
    runs = c.search_runs([exp.experiment_id], f"tags.`{tracking.TAG_KIND}` = 'trial'")
    trained = [r.data.metrics.get("seconds", float("nan")) for r in runs]
    return {"trials": len(runs), "at_once": most_at_once([(r.info.start_time, r.info.end_time) for r in runs]),
            "trial_train_median_s": statistics.median(trained) if trained else float("nan")}


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from sparsebench.workflows.runner import init_ray
    from sparsebench.workflows.search import search

    if args.resource == "gpu" and not torch.cuda.is_available():
        print("gpu_packing: error: --resource gpu needs a CUDA device; none is visible (use --resource cpu for the "
              "CPU-only check)", file=sys.stderr)
        return 2
    fractions = [float(f) for f in args.fractions.split(",")]
    init_ray()
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0) if args.resource == 'gpu' else 'CPU'}, "
          f"{args.trials} trials of {args.epochs} epochs, MLP {args.hidden}, batch {args.batch_size}, {args.dataset}")
    results = {}
    with tempfile.TemporaryDirectory(prefix="sparsebench-gpu-pack-") as d:
        folder = Path(d)
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        for f in fractions:
            gpus, cpus = (f, args.cpus_per_trial) if args.resource == "gpu" else (0.0, f)
            name = f"{args.resource}{f:g}"
            s = dense_study(args, folder, uri, name, "gpu-packing", args.epochs,
                            cpus_per_trial=cpus, gpus_per_trial=gpus)
            start = time.perf_counter()
            search(s, echo=False)
            wall = time.perf_counter() - start
            r = {**measure(uri, s.experiment), "wall_s": wall}
            r["per_hour"] = r["trials"] / wall * 3600
            results[f] = r
            print(f"  {args.resource} per trial {f:g}: wall {wall:.1f} s, {r['trials']} trials, at most "
                  f"{r['at_once']} at once, {r['per_hour']:.0f} trials/hour, median trial training "
                  f"{r['trial_train_median_s']:.1f} s", flush=True)
    base = results[fractions[0]]
    for f in fractions[1:]:
        r = results[f]
        print(f"{args.resource} {f:g} against {fractions[0]:g}: trials/hour x{r['per_hour'] / base['per_hour']:.2f}, "
              f"trial training x{r['trial_train_median_s'] / base['trial_train_median_s']:.2f}, "
              f"{r['at_once']} vs {base['at_once']} at once")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    sys.exit(main())
