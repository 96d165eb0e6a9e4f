"""The cluster path on a real multi-node Ray cluster (issue 8, items 2, 4 and 5): a head without CPUs (as in
cluster.yaml), two worker raylets of one CPU each, token authentication on, and a real `sparsebench server`.

First the README's `ray job submit --working-dir .` of a search. Then every study is a `sparsebench search` driver
process connected with RAY_ADDRESS, and each test injects one fault for real (SIGKILL of a trial's worker process,
of the driver, of a whole node; a server restart; a NaN loss; 32 trials logging at once) and then counts what
MLflow holds: every epoch exactly once, in the run the trial started, and nothing left RUNNING.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import torch

from sparsebench.workflows import tracking
from sparsebench.workflows.trainable import HISTORY_KEY, STATE_FILE

from .loopback_cluster import RAY, REPO, LoopbackCluster, alive, trial_workers

pytestmark = [pytest.mark.ray, pytest.mark.slow]

# About 0.25 s per epoch on one core: long enough to inject a fault mid-trial, short enough for CI.
SLOW_SPACE = """method: dense
fixed:
  model.hidden: [512, 512]
  train.batch_size: 32
  train.optimizer: sgd
  train.schedule: constant
space:
  train.lr: {type: float, low: 0.01, high: 0.1, log: true}
"""
# SGD at rate 1e8 overflows to NaN in its first epoch (tests/test_train.py); 0.05 trains normally.
NAN_SPACE = """method: dense
fixed:
  model.hidden: [64]
  train.batch_size: 64
  train.optimizer: sgd
space:
  train.lr: {type: categorical, choices: [1.0e+8, 0.05]}
"""
TINY_SPACE = """method: dense
fixed:
  model.hidden: [64]
  train.batch_size: 128
space:
  train.lr: {type: float, low: 0.01, high: 0.1, log: true}
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = LoopbackCluster(tmp_path_factory.mktemp("faults"))
    try:
        yield c.start(workers=[1, 1])
    finally:
        c.stop()


def study_args(cluster: LoopbackCluster, space: str, experiment: str, samples: int, epochs: int, *extra: str) -> list[str]:
    path = cluster.base / f"{experiment.replace('/', '_')}.yaml"
    path.write_text(space)
    # grace period = epochs: ASHA stops no trial, so every trial must log every epoch.
    return ["--methods", "dense", "--search-space", str(path), "--num-samples", str(samples), "--epochs", str(epochs),
            "--grace-period", str(epochs), "--experiment", experiment, "--storage", str(cluster.base / "results"), *extra]


def logged_past(cluster: LoopbackCluster, experiment: str, epoch: int, count: int = 1):
    """The trial runs that have logged `epoch` or later, when at least `count` have (else None)."""
    runs = [r for r in cluster.trial_runs(experiment) if (cluster.epochs(r.info.run_id) or [0])[-1] >= epoch]
    return runs if len(runs) >= count else None


def assert_complete(cluster: LoopbackCluster, experiment: str, samples: int, epochs: int) -> list:
    """Every trial has one run, FINISHED, with each epoch logged exactly once; the parent is FINISHED."""
    runs = cluster.trial_runs(experiment)
    assert len(runs) == samples
    assert len({r.data.tags[tracking.TAG_TRIAL] for r in runs}) == samples      # no trial got a second run
    for r in runs:
        assert r.info.status == "FINISHED", (r.info.run_id, r.info.status)
        assert cluster.epochs(r.info.run_id) == list(range(1, epochs + 1)), r.info.run_id
    c = cluster.client()
    exp = c.get_experiment_by_name(experiment)
    parents = c.search_runs([exp.experiment_id], f"tags.`{tracking.TAG_KIND}` = 'parent'")
    assert [p.info.status for p in parents] == ["FINISHED"]
    assert not c.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'")
    return runs


def histories(cluster: LoopbackCluster, run_id: str, keys=("train_loss", "val_acc", "test_acc")) -> dict:
    c = cluster.client()
    return {k: [(m.step, m.value) for m in sorted(c.get_metric_history(run_id, k), key=lambda m: m.step)] for k in keys}


def test_job_submit_logs_every_trial_to_the_server_and_results_to_the_storage(cluster):
    """The README's submission: `ray job submit --working-dir .` through the dashboard of a token-protected head."""
    env, storage = cluster.env, cluster.base / "job_results"
    assert (cluster.home / ".ray" / "auth_token").is_file()         # token auth on, with the token made for it
    before = {p.name for p in REPO.iterdir()}
    cmd = [RAY, "job", "submit", "--address", cluster.dashboard, "--working-dir", ".", "--",
           "python", "-m", "sparsebench.workflows", "search", "--methods", "dense", "--num-samples", "2", "--epochs", "2",
           "--tracking-uri", cluster.mlflow, "--storage", str(storage)]
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0 and "succeeded" in p.stdout + p.stderr, (p.stdout[-4000:], p.stderr[-4000:])
    assert_complete(cluster, "search/digits", 2, 2)
    # Tune's results went to the storage given; the server keeps the store in its own folder; the working copy
    # got no mlflow.db, ray_results or mlruns.
    assert any(storage.glob("dense-digits-*/experiment_state-*.json"))
    assert (cluster.server_dir / "mlflow.db").is_file()
    assert {p.name for p in REPO.iterdir()} == before
    # The job unpacked its working_dir in the head's session folder (each worker raylet has its own --temp-dir):
    # the code is there, and nothing .rayignore excludes.
    pkgs = [p for p in Path("/tmp/ray/session_latest/runtime_resources/working_dir_files").glob("_ray_pkg_*")
            if p.is_dir()]
    assert pkgs, "no unpacked working_dir found"
    pkg = max(pkgs, key=lambda p: p.stat().st_mtime)
    names = {p.name for p in pkg.iterdir()}
    assert {"methods", "workflows", "search_spaces", "pyproject.toml"} <= names
    assert not names & {".git", "mlruns", "mlflow.db", "ray_results", "build", "reproductions"}, names
    assert not list(pkg.rglob("*.pt")) and not list(pkg.rglob("__pycache__"))


def test_a_killed_trial_worker_is_retried_from_its_checkpoint_and_ends_as_if_never_killed(cluster):
    # A checkpoint about every 4 epochs (workflows/checkpointing.py), so the retry trains the epochs after its
    # checkpoint a second time; they must still be logged once and give the same metrics. 40 epochs (~10 s): MLflow
    # shows an epoch about 2 s after it was trained (results buffered 1 s, writes batched 1 s).
    epochs, exp, cadence = 40, "faults/kill-worker", ["--checkpoint-seconds", "1"]
    driver = cluster.search(*study_args(cluster, SLOW_SPACE, exp, 1, epochs, *cadence), name="kill-worker")
    # The kill comes two logged epochs after the first checkpoint appeared in the storage: results reach the
    # driver in order, so by then Tune has registered that checkpoint and the retry must not start from scratch.
    checkpoints = lambda: sorted((cluster.base / "results").glob("dense-digits-*/*/checkpoint_*"))  # noqa: E731
    cluster.wait_for(checkpoints, "the trial's first checkpoint", driver=driver, name="kill-worker")
    (run,) = cluster.trial_runs(exp)
    seen = (cluster.epochs(run.info.run_id) or [0])[-1]
    cluster.wait_for(lambda: logged_past(cluster, exp, seen + 2), f"epoch {seen + 2}", driver=driver, name="kill-worker")
    (pid,) = trial_workers()
    os.kill(pid, signal.SIGKILL)
    killed_at = cluster.epochs(run.info.run_id)[-1]
    assert killed_at < epochs                      # the kill landed mid-training
    cluster.finish(driver, "kill-worker")
    assert not alive(pid)
    (after,) = assert_complete(cluster, exp, 1, epochs)
    assert after.info.run_id == run.info.run_id    # the retry continued the same MLflow run
    # MLflow cannot tell a resume from a restart (the callback skips epochs logged already), so Tune's own record
    # is read: an error file for the failure, and the result log. The retry's first report carries the history it
    # restored (workflows/trainable.HISTORY_KEY), so the checkpoint it resumed from is known exactly. The kill may
    # come after a report reached the driver but before Tune's result log wrote it (that epoch is missing from the
    # log; MLflow holds it, which assert_complete checked). A retry from scratch would restore nothing.
    trial_dirs = [d for d in (cluster.base / "results").glob("dense-digits-*/*") if d.is_dir()]
    assert len(trial_dirs) == 1 and any(trial_dirs[0].glob("error*")), list(trial_dirs[0].iterdir())
    results = [json.loads(line) for line in (trial_dirs[0] / "result.json").read_text().splitlines()]
    reported = [r["epoch"] for r in results]
    (resumed,) = [r for r in results if HISTORY_KEY in r]
    restored_epochs = [m["epoch"] for m in json.loads(resumed[HISTORY_KEY])]
    assert restored_epochs == list(range(1, len(restored_epochs) + 1)) and restored_epochs, restored_epochs
    assert resumed["epoch"] == len(restored_epochs) + 1, (resumed["epoch"], restored_epochs)
    i = results.index(resumed)    # before it, the first attempt from epoch 1; from it on, the retry to the end
    assert reported[:i] == list(range(1, i + 1)), reported
    assert reported[i:] == list(range(len(restored_epochs) + 1, epochs + 1)), reported
    # The finished trial's last checkpoint holds its final epoch (taken whatever the cadence).
    final = torch.load(checkpoints()[-1] / STATE_FILE, map_location="cpu", weights_only=False)
    assert final["epoch"] == epochs

    # The same study, never interrupted: the same config (same Optuna seed) gives bit-identical metrics.
    ref = cluster.search(*study_args(cluster, SLOW_SPACE, "faults/uninterrupted", 1, epochs, *cadence), name="uninterrupted")
    cluster.finish(ref, "uninterrupted")
    (clean,) = assert_complete(cluster, "faults/uninterrupted", 1, epochs)
    assert clean.data.tags["config_hash"] == after.data.tags["config_hash"]
    assert histories(cluster, clean.info.run_id) == histories(cluster, after.info.run_id)


def test_a_killed_driver_is_restored_by_rerunning_the_command_without_rerunning_finished_trials(cluster):
    samples, epochs, exp = 4, 8, "faults/kill-driver"
    args = study_args(cluster, SLOW_SPACE, exp, samples, epochs)
    driver = cluster.search(*args, name="kill-driver")

    def some_done_some_running():
        runs = cluster.trial_runs(exp)
        done = [r for r in runs if r.info.status == "FINISHED"]
        busy = [r for r in runs if r.info.status == "RUNNING" and (cluster.epochs(r.info.run_id) or [0])[-1] >= 2]
        return (done, busy) if done and busy else None

    done, busy = cluster.wait_for(some_done_some_running, "a finished and a running trial", driver=driver, name="kill-driver")
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    c = cluster.client()

    def stamps(run_id: str) -> dict:
        return {k: sorted((m.step, m.timestamp) for m in c.get_metric_history(run_id, k)) for k in ("epoch", "val_acc")}

    before = {r.info.run_id: stamps(r.info.run_id) for r in done}
    finished_ids = {r.data.tags[tracking.TAG_TRIAL] for r in done}
    time.sleep(2)  # Ray ends the dead driver's trial actors

    out = cluster.finish(cluster.search(*args, name="kill-driver-rerun"), "kill-driver-rerun")
    assert "restoring study" in out
    runs = assert_complete(cluster, exp, samples, epochs)
    # Finished trials were not trained again: their epochs are the ones logged before the kill, same times.
    assert {run_id: stamps(run_id) for run_id in before} == before
    # Nor by Tune: in each one's result log an epoch appears again only with the same training time (a trial
    # restored at its final checkpoint reports its last epoch again, untrained; workflows/trainable.py).
    for tid in finished_ids:
        (trial_dir,) = (cluster.base / "results").glob(f"dense-digits-*/{tid}_*")
        trained: dict[int, float] = {}
        for line in (trial_dir / "result.json").read_text().splitlines():
            r = json.loads(line)
            assert trained.setdefault(r["epoch"], r["seconds"]) == r["seconds"], (tid, r["epoch"])
        assert sorted(trained) == list(range(1, epochs + 1)), (tid, sorted(trained))
    assert {r.data.tags[tracking.TAG_TRIAL] for r in runs} >= {r.data.tags[tracking.TAG_TRIAL] for r in busy}


def test_a_diverging_trial_ends_as_diverged_with_its_metrics_and_the_study_goes_on(cluster):
    samples, epochs, exp = 6, 4, "faults/nan"
    out = cluster.finish(cluster.search(*study_args(cluster, NAN_SPACE, exp, samples, epochs), name="nan"), "nan")
    runs = cluster.trial_runs(exp)
    assert len(runs) == samples and all(r.info.status == "FINISHED" for r in runs)
    diverged = [r for r in runs if r.data.tags.get("diverged") == "true"]
    healthy = [r for r in runs if r not in diverged]
    assert diverged and healthy, "the seeded sampler should draw both rates"
    for r in diverged:
        assert r.data.params["train.lr"] == "100000000.0"
        assert cluster.epochs(r.info.run_id) == [1]                 # stopped after the NaN epoch
        assert r.data.metrics["train_loss"] != r.data.metrics["train_loss"]   # NaN, logged as such
        assert 0.0 <= r.data.metrics["val_acc"] <= 1.0
    for r in healthy:
        assert cluster.epochs(r.info.run_id) == list(range(1, epochs + 1)) and r.data.metrics["val_acc"] > 0.5
    assert out.count(" diverged ") == len(diverged)


def test_a_tracking_server_restart_mid_study_loses_nothing(cluster):
    samples, epochs, exp = 2, 24, "faults/server-restart"   # ~6 s: the server goes while both still train
    # MLflow's back-off doubles from 1 s instead of 2 s (7 retries still wait > 2 min): a shorter test, same path.
    driver = cluster.search(*study_args(cluster, SLOW_SPACE, exp, samples, epochs), name="server-restart",
                            env={"MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"})
    cluster.wait_for(lambda: logged_past(cluster, exp, 2), "epoch 2", driver=driver, name="server-restart")
    cluster.stop_server()
    stopped = time.time()
    time.sleep(4)                                  # trials go on; the driver's logging retries meanwhile
    cluster.start_server()
    down = time.time() - stopped
    cluster.finish(driver, "server-restart")
    runs = assert_complete(cluster, exp, samples, epochs)
    # Both trials were mid-training while the server was down (else nothing was tested).
    assert all(r.info.end_time / 1000 > stopped + down for r in runs)
    assert "database is locked" not in cluster.server_log()


def test_32_concurrent_trials_logging_every_epoch_lose_nothing(cluster):
    """Two studies submitted at once (two drivers, two writers to one server and one SQLite), 16 trials each on
    1/16 CPU, so 32 trials run concurrently on the two worker nodes."""
    samples, epochs = 16, 3
    start = time.time()
    drivers = {name: cluster.search(*study_args(cluster, TINY_SPACE, f"load/{name}", samples, epochs, "--cpus-per-trial",
                                                "0.0625", "--max-concurrent", str(samples)), name=name)
               for name in ("load-a", "load-b")}
    for name, d in drivers.items():
        cluster.finish(d, name, timeout=480)
    wall = time.time() - start
    spans, run_ids = [], []
    for name in drivers:
        for r in assert_complete(cluster, f"load/{name}", samples, epochs):
            spans.append((r.info.start_time, r.info.end_time))
            run_ids.append(r.info.run_id)
    # Counted in the server's database itself (read-only), one query: a duplicated epoch would be a second row.
    with sqlite3.connect(f"file:{cluster.server_dir / 'mlflow.db'}?mode=ro", uri=True) as db:
        rows = db.execute(f"SELECT run_uuid, key, COUNT(*), COUNT(DISTINCT step), MIN(step), MAX(step) FROM metrics "
                          f"WHERE run_uuid IN ({','.join('?' * len(run_ids))}) GROUP BY run_uuid, key", run_ids).fetchall()
    keys = {run: sorted(k for r, k, *_ in rows if r == run) for run in run_ids}
    assert len({tuple(k) for k in keys.values()}) == 1 and len(keys[run_ids[0]]) > 20   # same metrics in every run
    assert all(n == distinct == epochs and (lo, hi) == (1, epochs) for _, _, n, distinct, lo, hi in rows), rows
    points = sum(n for _, _, n, *_ in rows)
    assert points == 2 * samples * epochs * len(keys[run_ids[0]])
    assert "database is locked" not in cluster.server_log()
    # How many trials were open at once (from the runs' own start and end times), for the record.
    peak = max(sum(s <= t < e for s, e in spans) for t, _ in spans)
    (cluster.base / "load.txt").write_text(f"trials {2 * samples} epochs {epochs} metric points {points} "
                                           f"peak concurrent {peak} wall {wall:.1f} s\n")
    print(f"\nload: {2 * samples} trials x {epochs} epochs, {points} metric points, lost 0, "
          f"peak concurrent runs {peak}, wall {wall:.1f} s")


def test_a_removed_worker_node_moves_its_trial_to_the_remaining_node(cluster):
    samples, epochs, exp = 2, 40, "faults/node-removed"   # ~10 s: the node goes while both still train
    driver = cluster.search(*study_args(cluster, SLOW_SPACE, exp, samples, epochs), name="node-removed")
    runs = cluster.wait_for(lambda: logged_past(cluster, exp, 3, count=2), "both trials at epoch 3", driver=driver,
                            name="node-removed")
    nodes = {r.info.run_id: cluster.client().get_run(r.info.run_id).data.tags["trial.node_id"] for r in runs}
    assert set(nodes.values()) == set(cluster.workers)   # one trial per worker node (one CPU each)
    victim_run, victim_node = next(iter(nodes.items()))
    survivor = next(n for n in cluster.workers if n != victim_node)
    try:
        cluster.remove_worker(victim_node)
        cluster.finish(driver, "node-removed", timeout=400)
        assert_complete(cluster, exp, samples, epochs)
        moved = cluster.client().get_run(victim_run).data.tags["trial.node_id"]
        assert moved == survivor                          # it finished on the node that was left
    finally:
        cluster.add_worker(1)                             # the fixture's shape for any later test
