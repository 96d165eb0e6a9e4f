"""The cluster path on a real multi-node Ray cluster (issue 8, items 2, 4 and 5): a head without CPUs (as in
cluster.yaml), two worker raylets of one CPU each, token authentication on, and a real `sparsebench server`.

First the README's `ray job submit --working-dir .` of a search. Then every study is a `sparsebench search` driver
process connected with RAY_ADDRESS, and each test injects one fault for real (SIGKILL of a trial's worker process,
of the driver, of a whole node; a server restart; a NaN loss; 32 trials logging at once) and then counts what
MLflow holds: every epoch exactly once, in the run the trial started, and nothing left RUNNING.

Each fault is injected at a point the test controls, never by racing the clock (issue 21): the trials hold after a
chosen epoch (workflows/failpoints.py, tests/loopback_cluster.Holds) until the test has seen that epoch's checkpoint
registered by the driver and, where it matters, logged in MLflow; then the fault, then the release. Timeouts only
bound how long a broken product is waited for.
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

from .loopback_cluster import RAY, REPO, Holds, LoopbackCluster, alive, processes

pytestmark = [pytest.mark.ray, pytest.mark.slow]

# About 0.25 s per epoch on one core. The faults do not depend on it (the trials hold where the fault goes).
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
           "sparsebench", "search", "--methods", "dense", "--num-samples", "2", "--epochs", "2",
           "--grace-period", "2", "--tracking-uri", cluster.mlflow, "--storage", str(storage)]   # ASHA stops none
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
    pkgs = [p for p in (cluster.session_dir / "runtime_resources/working_dir_files").glob("_ray_pkg_*")
            if p.is_dir()]
    assert pkgs, "no unpacked working_dir found"
    pkg = max(pkgs, key=lambda p: p.stat().st_mtime)
    names = {p.name for p in pkg.iterdir()}
    assert {"methods", "workflows", "search_spaces", "pyproject.toml"} <= names
    assert not names & {".git", "mlruns", "mlflow.db", "ray_results", "build", "reproductions"}, names
    assert not list(pkg.rglob("*.pt")) and not list(pkg.rglob("__pycache__"))


def test_a_job_ships_its_data_file_and_every_node_reads_its_own_copy(cluster, tmp_path):
    """`ray job submit --working-dir <folder>` with `--dataset mydata/wine.csv` inside it (docs/cluster.md, "Your
    data on the cluster"). Each node here has its own Ray --temp-dir, so the working dir is unpacked at a different
    path on each: the absolute path the driver sees exists on its node only. The two trials hold after epoch 1 until
    both are held, so they run at once, one per worker node: at least one is on a node other than the driver's."""
    from sklearn.datasets import load_wine

    job = tmp_path / "job"
    (job / "mydata").mkdir(parents=True)
    load_wine(as_frame=True).frame.to_csv(job / "mydata" / "wine.csv", index=False)   # label column: `target`
    holds, exp, storage = Holds(tmp_path / "holds", epoch=1), "jobs/wine-file", cluster.base / "job_file_results"
    runtime_env = json.dumps({"env_vars": holds.env})   # the hold points reach the job as a user's variables would
    cmd = [RAY, "job", "submit", "--address", cluster.dashboard, "--working-dir", str(job), "--runtime-env-json",
           runtime_env, "--", "sparsebench", "search", "--methods", "dense", "--dataset", "mydata/wine.csv",
           "--num-samples", "2", "--epochs", "2", "--grace-period", "2", "--experiment", exp,
           "--tracking-uri", cluster.mlflow, "--storage", str(storage)]
    log = tmp_path / "job.log"
    submit = subprocess.Popen(cmd, cwd=tmp_path, env=cluster.env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 300
        while not holds.ready(2):
            assert submit.poll() is None, f"the job ended ({submit.returncode}) before both trials held:\n" + log.read_text()[-4000:]
            assert time.time() < deadline, "both trials did not hold in 300 s:\n" + log.read_text()[-4000:]
            time.sleep(0.2)
    finally:
        holds.release()
    assert submit.wait(timeout=300) == 0 and "succeeded" in log.read_text(), log.read_text()[-4000:]
    runs = assert_complete(cluster, exp, 2, 2)
    tags = [cluster.client().get_run(r.info.run_id).data.tags for r in runs]
    assert {t["trial.node_id"] for t in tags} == set(cluster.workers)    # one trial on each worker node
    for t in tags:   # each read the copy its own node unpacked (on one machine the head's copy is readable too)
        assert Path(t["trial.data_file"]).is_relative_to(cluster.workers[t["trial.node_id"]]), t["trial.data_file"]
        assert t["trial.data_file"].endswith("/mydata/wine.csv")
    for r in runs:
        (inp,) = cluster.client().get_run(r.info.run_id).inputs.dataset_inputs
        assert inp.dataset.name == "wine.csv"
    params = cluster.client().get_run(runs[0].info.run_id).data.params
    assert params["data.dataset"] == "mydata/wine.csv"          # relative to the working dir, not one node's path


def test_stopping_the_cluster_leaves_another_ray_on_the_machine_running(tmp_path):
    """A developer's own Ray (or a second test session's cluster) survives the suite: LoopbackCluster.stop kills
    only its own processes, never `ray stop --force`."""
    other = LoopbackCluster(tmp_path / "other").start(workers=[1])
    table = processes()
    theirs = set(other.own_processes())
    daemons = [p for p in theirs if any(k in table[p][1] for k in ("gcs_server ", "raylet/raylet ", "dashboard.py"))]
    assert len(daemons) >= 4, [table[p][1][:80] for p in theirs]   # GCS, dashboard, the head's and a worker's raylet
    mine = LoopbackCluster(tmp_path / "mine")
    try:
        mine.start(workers=[1])
        ours = set(mine.own_processes())
        assert ours and not ours & theirs
        mine.stop()
        assert not [p for p in ours if alive(p)]
        assert all(alive(p) for p in daemons)
        p = subprocess.run([RAY, "status", "--address", other.address], env=other.env, capture_output=True,
                           text=True, timeout=120)
        assert p.returncode == 0 and "1.0 CPU" in p.stdout, p.stdout + p.stderr      # and it still answers
    finally:
        mine.stop()
        other.stop()


def test_a_killed_trial_worker_is_retried_from_its_checkpoint_and_ends_as_if_never_killed(cluster, tmp_path):
    # The trial holds after epoch 10, checkpointed there; the kill comes once the driver registered that checkpoint
    # and MLflow shows the epoch, so the retry must resume at epoch 11 and train nothing twice.
    epochs, at, exp = 40, 10, "faults/kill-worker"
    holds = Holds(tmp_path / "holds", epoch=at)
    driver = cluster.search(*study_args(cluster, SLOW_SPACE, exp, 1, epochs), name="kill-worker", env=holds.env)
    (tid,) = cluster.wait_for(lambda: holds.ready(1), f"the trial held at epoch {at}", driver=driver, name="kill-worker")
    (run,) = cluster.wait_for(lambda: logged_past(cluster, exp, at), f"epoch {at} in MLflow", driver=driver,
                              name="kill-worker")
    assert cluster.epochs(run.info.run_id) == list(range(1, at + 1))      # held: nothing after the hold point
    (pid,) = cluster.trial_workers()
    os.kill(pid, signal.SIGKILL)
    holds.release()
    cluster.finish(driver, "kill-worker")
    assert not alive(pid)
    (after,) = assert_complete(cluster, exp, 1, epochs)
    assert after.info.run_id == run.info.run_id    # the retry continued the same MLflow run
    assert after.data.tags[tracking.TAG_TRIAL] == tid
    # MLflow cannot tell a resume from a restart (the callback skips epochs logged already), so Tune's own record
    # is read: an error file for the failure, and the result log. The retry's first report carries the history it
    # restored (workflows/trainable.HISTORY_KEY): exactly the epochs up to the hold point. A retry from scratch
    # would restore nothing and report epoch 1 again.
    trial_dirs = [d for d in (cluster.base / "results").glob("dense-digits-*/*") if d.is_dir()]
    assert len(trial_dirs) == 1 and any(trial_dirs[0].glob("error*")), list(trial_dirs[0].iterdir())
    results = [json.loads(line) for line in (trial_dirs[0] / "result.json").read_text().splitlines()]
    assert [r["epoch"] for r in results] == list(range(1, epochs + 1))   # each epoch trained and reported once
    (resumed,) = [r for r in results if HISTORY_KEY in r]
    assert resumed["epoch"] == at + 1
    assert [m["epoch"] for m in json.loads(resumed[HISTORY_KEY])] == list(range(1, at + 1))
    # The finished trial's last checkpoint holds its final epoch (taken whatever the cadence).
    checkpoints = sorted((cluster.base / "results").glob("dense-digits-*/*/checkpoint_*"))
    final = torch.load(checkpoints[-1] / STATE_FILE, map_location="cpu", weights_only=False)
    assert final["epoch"] == epochs

    # The same study, never interrupted: the same config (same Optuna seed) gives bit-identical metrics.
    ref = cluster.search(*study_args(cluster, SLOW_SPACE, "faults/uninterrupted", 1, epochs), name="uninterrupted")
    cluster.finish(ref, "uninterrupted")
    (clean,) = assert_complete(cluster, "faults/uninterrupted", 1, epochs)
    assert clean.data.tags["config_hash"] == after.data.tags["config_hash"]
    assert histories(cluster, clean.info.run_id) == histories(cluster, after.info.run_id)


def test_a_killed_driver_is_restored_by_rerunning_the_command_without_rerunning_finished_trials(cluster, tmp_path):
    # Two trials run at a time (two one-CPU workers). Every trial holds after epoch 2: the first two are released
    # and finish; the driver is killed while the other two are held, checkpointed at epoch 2.
    samples, epochs, exp = 4, 8, "faults/kill-driver"
    holds = Holds(tmp_path / "holds", epoch=2)
    args = study_args(cluster, SLOW_SPACE, exp, samples, epochs)
    driver = cluster.search(*args, name="kill-driver", env=holds.env)
    first = cluster.wait_for(lambda: holds.ready(2), "the first two trials held", driver=driver, name="kill-driver")
    holds.release(*first)
    busy_ids = cluster.wait_for(lambda: holds.ready(2), "the last two trials held", driver=driver, name="kill-driver")
    assert not busy_ids & first

    def finished_and_held():
        runs = {r.data.tags[tracking.TAG_TRIAL]: r for r in cluster.trial_runs(exp)}
        done = [runs[t] for t in first if t in runs and runs[t].info.status == "FINISHED"]
        busy = [runs[t] for t in busy_ids if t in runs and cluster.epochs(runs[t].info.run_id) == [1, 2]]
        return (done, busy) if len(done) == 2 and len(busy) == 2 else None

    done, busy = cluster.wait_for(finished_and_held, "two finished and two held trials in MLflow", driver=driver,
                                  name="kill-driver")
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    c = cluster.client()

    def stamps(run_id: str) -> dict:
        return {k: sorted((m.step, m.timestamp) for m in c.get_metric_history(run_id, k)) for k in ("epoch", "val_acc")}

    before = {r.info.run_id: stamps(r.info.run_id) for r in done}
    finished_ids = {r.data.tags[tracking.TAG_TRIAL] for r in done}
    # Ray ends the dead driver's trial actors (the held ones among them) before the rerun can use their CPUs.
    cluster.wait_for(lambda: not cluster.trial_workers(), "the dead driver's trials to end", timeout=120)

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


def test_a_tracking_server_restart_mid_study_loses_nothing(cluster, tmp_path):
    # Both trials hold after epoch 3; the server stops; they are released and the test waits until the driver has
    # processed two more epochs of each (failpoints' `.reported` marks: Tune's result.json is a buffered file and
    # lags), trained while the server was down; then the server comes back and everything must reach it, once.
    samples, epochs, at, exp = 2, 24, 3, "faults/server-restart"
    holds = Holds(tmp_path / "holds", epoch=at)
    # The product rides out an outage as long as the MLflow client's retries last (back-off doubling per retry,
    # capped at 120 s by urllib3). The test sets that window far beyond what the outage takes on a loaded machine
    # (10 retries from 1 s, MLflow's limit: about 8 minutes), so the outage's length is never a race; the default
    # (7 retries from 2 s) is in docs/cluster.md. A trial that ends while the server is away waits for it (its run
    # is closed before Tune records it finished), so the test asks for two epochs of the 21 left, not for the end.
    driver = cluster.search(*study_args(cluster, SLOW_SPACE, exp, samples, epochs), name="server-restart",
                            env={"MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "10",
                                 **holds.env})
    cluster.wait_for(lambda: holds.ready(2), f"both trials held at epoch {at}", driver=driver, name="server-restart")
    cluster.wait_for(lambda: logged_past(cluster, exp, at, count=2), f"epoch {at} of both in MLflow", driver=driver,
                     name="server-restart")
    cluster.stop_server()
    holds.release()
    down = cluster.wait_for(lambda: (lambda r: r if len(r) == 2 and min(r.values()) >= at + 2 else None)(holds.reported()),
                            f"epoch {at + 2} of both trials processed while the server is down", driver=driver,
                            name="server-restart")
    cluster.start_server()
    cluster.finish(driver, "server-restart")
    runs = assert_complete(cluster, exp, samples, epochs)
    assert len(runs) == 2 and min(down.values()) >= at + 2
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
    # Every epoch metric once per epoch; MLflow's system metrics are samples (every second, and always with a trial's
    # first and last report: workflows/system_metrics.py), so at most once per step, never twice.
    per_epoch = [r for r in rows if not r[1].startswith("system/")]
    sampled = [r for r in rows if r[1].startswith("system/")]
    assert all(n == distinct == epochs and (lo, hi) == (1, epochs) for _, _, n, distinct, lo, hi in per_epoch), per_epoch
    assert sampled and all(n == distinct <= epochs and (lo, hi) == (1, epochs)
                           for _, _, n, distinct, lo, hi in sampled), sampled
    points = sum(n for _, _, n, *_ in per_epoch)
    assert points == 2 * samples * epochs * len({k for _, k, *_ in per_epoch})   # no epoch lost, none twice
    assert "database is locked" not in cluster.server_log()
    # How many trials were open at once (from the runs' own start and end times), for the record.
    peak = max(sum(s <= t < e for s, e in spans) for t, _ in spans)
    (cluster.base / "load.txt").write_text(f"trials {2 * samples} epochs {epochs} metric points {points} "
                                           f"peak concurrent {peak} wall {wall:.1f} s\n")
    print(f"\nload: {2 * samples} trials x {epochs} epochs, {points} metric points, lost 0, "
          f"peak concurrent runs {peak}, wall {wall:.1f} s")


def test_a_removed_worker_node_moves_its_trial_to_the_remaining_node(cluster, tmp_path):
    # Both trials hold after epoch 3 (one per node); the node of one is removed while they are held.
    samples, epochs, at, exp = 2, 40, 3, "faults/node-removed"
    holds = Holds(tmp_path / "holds", epoch=at)
    driver = cluster.search(*study_args(cluster, SLOW_SPACE, exp, samples, epochs), name="node-removed", env=holds.env)
    cluster.wait_for(lambda: holds.ready(2), f"both trials held at epoch {at}", driver=driver, name="node-removed")
    runs = cluster.wait_for(lambda: logged_past(cluster, exp, at, count=2), f"both trials at epoch {at}",
                            driver=driver, name="node-removed")
    nodes = {r.info.run_id: cluster.client().get_run(r.info.run_id).data.tags["trial.node_id"] for r in runs}
    assert set(nodes.values()) == set(cluster.workers)   # one trial per worker node (one CPU each)
    victim_run, victim_node = next(iter(nodes.items()))
    survivor = next(n for n in cluster.workers if n != victim_node)
    try:
        cluster.remove_worker(victim_node)
        holds.release()
        cluster.finish(driver, "node-removed", timeout=400)
        assert_complete(cluster, exp, samples, epochs)
        moved = cluster.client().get_run(victim_run).data.tags["trial.node_id"]
        assert moved == survivor                          # it finished on the node that was left
    finally:
        cluster.add_worker(1)                             # the fixture's shape for any later test
