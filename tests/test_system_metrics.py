"""Trial runs record MLflow's system metrics: sampled in the trial's process by MLflow's monitors
(workflows/system_metrics.py), sent with its results, logged by the driver as `system/<name>`; read back from a real
SQLite store. The sampling interval is set far beyond the test, so which reports carry samples is decided by the
code (the last report always samples), never by the clock."""
from __future__ import annotations

from types import SimpleNamespace

import psutil

from sparsebench.methods import RunConfig
from sparsebench.workflows import tracking
from sparsebench.workflows.system_metrics import PREFIX, Sampler
from sparsebench.workflows.trial import MlflowTrialCallback

HOUR = 3600.0


def test_a_short_trial_samples_at_its_first_and_last_report_only():
    sampler = Sampler(interval=HOUR)
    try:
        assert sampler.take(now=True)               # the first report samples then
        assert sampler.take() == {}                 # an epoch shorter than the interval carries none
        last = sampler.take(now=True)               # the last report samples then
        assert sampler.take() == {}                 # and the samples are cleared once taken
    finally:
        sampler.close()
    assert 0.0 <= last[PREFIX + "cpu_utilization_percentage"] <= 100.0
    assert 0.0 < last[PREFIX + "system_memory_usage_percentage"] <= 100.0
    total_mb = psutil.virtual_memory().total / 1e6
    assert 0.0 < last[PREFIX + "system_memory_usage_megabytes"] <= total_mb
    assert {PREFIX + "disk_usage_percentage", PREFIX + "network_receive_megabytes"} <= set(last)


def test_a_trial_run_has_system_metrics(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    c = tracking.client(uri)
    exp_id = tracking.get_or_create_experiment(c, "search/x")
    tracking.start_parent_run(c, exp_id, "study-x", "dense-search", tags={}, params={})
    cb = MlflowTrialCallback(uri, "search/x", "study-x", stage="search", decode=lambda x: x, tags={}, max_epochs=3, echo=False)
    cfg = RunConfig.from_flat({"method": "dense", "train.epochs": 3})
    trial = SimpleNamespace(trial_id="t1", config=cfg.flat(), last_result={"epoch": 3})
    sampler = Sampler(interval=HOUR)
    try:
        cb.on_trial_start(0, [], trial)
        for epoch in (1, 2, 3):   # as the trainable reports: a sample at the first and the last report
            cb.on_trial_result(0, [], trial, {"epoch": epoch, "val_acc": 0.5, **sampler.take(now=epoch != 2)})
        cb.on_trial_complete(0, [], trial)
    finally:
        sampler.close()
    (run,) = c.search_runs([exp_id], f"tags.`{tracking.TAG_KIND}` = 'trial'")
    system = {k for k in run.data.metrics if k.startswith(PREFIX)}
    assert {PREFIX + "cpu_utilization_percentage", PREFIX + "system_memory_usage_megabytes"} <= system
    history = c.get_metric_history(run.info.run_id, PREFIX + "cpu_utilization_percentage")
    assert [m.step for m in history] == [1, 3]   # the epochs they were reported with
