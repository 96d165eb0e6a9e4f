"""What Ray Tune + Optuna + MLflow cost on top of training (issue 8): one `sparsebench search` study of equal
trials, its wall time against the trials' own training time.

The study is the real one (`workflows.search.search`: local Ray, Optuna's TPE, ASHA with a grace period equal to
the epochs so that no trial is stopped, the trials' checkpoints, the driver-side MLflow callback), on a fixed dense
MLP whose epoch count is calibrated in this process so that each trial trains about `--trial-seconds` on one core.
The study runs once per `--variants` entry, one after another on the same Ray instance, so the defaults are
measured against a baseline in one process. An entry is CHECKPOINT:BUFFER:LINGER[:tbx], in seconds: how often a
trial checkpoints (workflows/checkpointing.py; 0: every epoch), how long a trial's actor collects results before it
sends them to the driver (workflows/search.py, REPORT_BUFFER_SECONDS; 0: one round trip per epoch), how long the
driver's MLflow writer waits to batch epochs (workflows/trial.py, LINGER_SECONDS), and `tbx` to keep Tune's
TensorBoard logger. The default compares the first version (0:0:0:tbx) with the current defaults.

Measured, from the MLflow runs the study wrote (driver clock, ms):
- trial compute: the sum over trials of the Trainer's own `seconds` (training passes, evaluation and the
  structure metrics of every epoch);
- capacity: wall time of `search()` x the cores the trials could use (cores / cpus_per_trial at once);
- utilisation = compute / capacity, and overhead = (capacity - compute) / compute;
- per trial: start-up latency, from the run's creation (Tune started the trial) to its first logged epoch minus
  that epoch's own seconds (actor start, imports, dataset load, model build, first report), and the per-epoch
  gap outside training (checkpoint save, report, the driver logging the epoch);
- what is left of capacity outside every trial's run: Ray/Tune start, scheduling gaps, the last wave's tail.

Run from the repository root (after `bash scripts/install.sh`):

    python benchmarks/orchestration.py                      # 16 trials of about a minute, twice: ~17 min on 2 cores
    python benchmarks/orchestration.py --trial-seconds 10 --variants 10:1:1   # a quick look
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from sparsebench.methods import RunConfig, Trainer
from sparsebench.workflows.checkpointing import CHECKPOINT_SECONDS
from sparsebench.workflows.runner import REPORT_BUFFER_SECONDS
from sparsebench.workflows.trial import LINGER_SECONDS


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=16)
    p.add_argument("--trial-seconds", type=float, default=60.0, help="training time each trial should take on one core")
    p.add_argument("--cores", type=int, default=os.cpu_count(), help="CPUs given to Ray (one trial per CPU)")
    p.add_argument("--hidden", default="512,512")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--tracking-uri", default=None, help="default: a fresh SQLite file in a temporary folder")
    p.add_argument("--variants", default=f"0:0:0:tbx,{CHECKPOINT_SECONDS:g}:{REPORT_BUFFER_SECONDS:g}:{LINGER_SECONDS:g}",
                   help="comma-separated CHECKPOINT:BUFFER:LINGER[:tbx], one study each; the first is the baseline")
    return p.parse_args(argv)


def fixed(args) -> dict:
    return {"method": "dense", "data.dataset": args.dataset, "model.hidden": [int(h) for h in args.hidden.split(",")],
            "train.batch_size": args.batch_size, "train.optimizer": "sgd", "train.schedule": "constant"}


def calibrate(args) -> tuple[int, float]:
    """Epochs giving about `trial_seconds` of training on one thread (as a trial with one CPU gets), timed here."""
    torch.set_num_threads(1)
    tr = Trainer(RunConfig.from_flat({**fixed(args), "train.epochs": 1000}))
    tr.run_epoch()                                  # warm-up
    start = tr.seconds
    for _ in range(3):
        tr.run_epoch()
    per_epoch = (tr.seconds - start) / 3
    torch.set_num_threads(args.cores)
    return max(1, math.ceil(args.trial_seconds / per_epoch)), per_epoch


def space_file(args, folder: Path) -> Path:
    import yaml

    f = fixed(args)
    body = {"method": "dense", "fixed": {k: v for k, v in f.items() if k not in ("method", "data.dataset")},
            "space": {"train.lr": {"type": "float", "low": 0.01, "high": 0.1, "log": True}}}
    path = folder / "space.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def dense_study(args, folder: Path, uri: str, name: str, bench: str, epochs: int, **settings):
    """The SearchSettings of one benchmark study: `args.trials` dense trials of `epochs` epochs over the fixed
    space of space_file (only the learning rate varies), no early stopping, its own experiment and storage."""
    from sparsebench.workflows.search import SearchSettings

    return SearchSettings(methods=("dense",), dataset=args.dataset, num_samples=args.trials, epochs=epochs,
                          tracking_uri=uri, storage=str(folder / f"results-{name}"),
                          search_space=str(space_file(args, folder)), grace_period=epochs,
                          experiment=f"bench/{bench}-{int(time.time())}-{name}", **settings)


def analyse(uri: str, experiment: str, wall: float, cores: int, t0_ms: int, t1_ms: int) -> dict:
    from mlflow.tracking import MlflowClient

    from sparsebench.workflows import tracking

    c = MlflowClient(tracking_uri=uri)
    exp = c.get_experiment_by_name(experiment)
    runs = c.search_runs([exp.experiment_id], f"tags.`{tracking.TAG_KIND}` = 'trial'")
    compute, startups, gaps, spans = 0.0, [], [], []
    for r in runs:
        secs = sorted(c.get_metric_history(r.info.run_id, "seconds"), key=lambda m: m.step)
        trained = secs[-1].value
        compute += trained
        startups.append((secs[0].timestamp - r.info.start_time) / 1000 - secs[0].value)
        if len(secs) > 1:  # time between two logged epochs that was not the epoch's training
            gaps += [(b.timestamp - a.timestamp) / 1000 - (b.value - a.value) for a, b in zip(secs, secs[1:])]
        spans.append((r.info.start_time, r.info.end_time))
    capacity = wall * cores
    in_runs = sum(e - s for s, e in spans) / 1000
    return {"trials": len(runs), "compute_s": compute, "capacity_s": capacity, "wall_s": wall,
            "utilisation": compute / capacity, "overhead": (capacity - compute) / compute,
            "startup_median_s": statistics.median(startups), "startup_max_s": max(startups),
            "startup_total_s": sum(startups),
            # The mean, not the median: with buffered results a trial's epochs reach the driver in bursts.
            "epoch_gap_mean_s": sum(gaps) / len(gaps) if gaps else float("nan"), "epoch_gap_total_s": sum(gaps),
            "outside_runs_s": capacity - in_runs,
            "first_run_after_s": (min(s for s, _ in spans) - t0_ms) / 1000,
            "after_last_run_s": (t1_ms - max(e for _, e in spans)) / 1000}


def study(s, cores: int) -> dict:
    from sparsebench.workflows.search import search

    t0_ms = int(time.time() * 1000)
    start = time.perf_counter()
    search(s, echo=False)
    wall = time.perf_counter() - start
    return analyse(s.tracking_uri, s.experiment, wall, cores, t0_ms, int(time.time() * 1000))


def report(r: dict, cores: int) -> None:
    print(f"  trials {r['trials']}, wall {r['wall_s']:.1f} s x {cores} cores = {r['capacity_s']:.1f} core-s; "
          f"trial compute {r['compute_s']:.1f} s")
    print(f"  utilisation {r['utilisation']:.3f} (cores busy training); overhead {r['overhead'] * 100:.1f}% of trial compute")
    print(f"  start-up per trial: median {r['startup_median_s']:.2f} s, max {r['startup_max_s']:.2f} s, "
          f"sum {r['startup_total_s']:.1f} core-s")
    print(f"  per-epoch gap outside training: mean {r['epoch_gap_mean_s'] * 1000:.1f} ms, sum {r['epoch_gap_total_s']:.1f} core-s")
    print(f"  core-s outside any trial run: {r['outside_runs_s']:.1f} (first run opened {r['first_run_after_s']:.1f} s "
          f"after the study started; {r['after_last_run_s']:.1f} s from the last run's end to the study's end)")


def main(argv=None) -> None:
    args = parse_args(argv)
    from sparsebench.workflows.runner import init_ray

    import sparsebench.workflows.trial as trial

    variants = [v.split(":") for v in args.variants.split(",")]
    epochs, per_epoch = calibrate(args)
    print(f"calibrated: {per_epoch * 1000:.0f} ms per epoch on one thread -> {epochs} epochs "
          f"(~{epochs * per_epoch:.0f} s per trial), {args.trials} trials on {args.cores} cores")
    t_ray = time.perf_counter()
    init_ray(num_cpus=args.cores)
    print(f"ray.init (not in wall): {time.perf_counter() - t_ray:.1f} s")
    results = {}
    with tempfile.TemporaryDirectory(prefix="sparsebench-orch-") as d:
        folder = Path(d)
        uri = args.tracking_uri or f"sqlite:///{folder / 'mlflow.db'}"
        for variant in variants:
            cadence, buffer, linger = (float(x) for x in variant[:3])
            tbx = variant[3:] == ["tbx"]
            name = f"ckpt{cadence:g}-buffer{buffer:g}-linger{linger:g}" + ("-tbx" if tbx else "")
            # Read by Tune's controller when the study's Tuner starts (workflows/search.py, tune_defaults).
            os.environ["TUNE_RESULT_BUFFER_LENGTH"] = "1000" if buffer > 0 else "1"
            os.environ["TUNE_RESULT_BUFFER_MIN_TIME_S"] = str(buffer)
            os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "0" if tbx else "1"
            trial.LINGER_SECONDS = linger
            s = dense_study(args, folder, uri, name, "orchestration", epochs, checkpoint_seconds=cadence)
            print(f"{name}: checkpoint every {cadence:g} s, results buffered {buffer:g} s, MLflow writes batched "
                  f"{linger:g} s, TensorBoard logger {'on' if tbx else 'off'}:", flush=True)
            results[name] = study(s, args.cores)
            report(results[name], args.cores)
    names = list(results)
    base = results[names[0]]
    for name in names[1:]:
        r = results[name]
        print(f"{name} against {names[0]}: wall x{r['wall_s'] / base['wall_s']:.3f}, "
              f"overhead {r['overhead'] * 100:.1f}% vs {base['overhead'] * 100:.1f}%, "
              f"per-epoch gap x{r['epoch_gap_mean_s'] / base['epoch_gap_mean_s']:.2f}")


if __name__ == "__main__":
    main()
