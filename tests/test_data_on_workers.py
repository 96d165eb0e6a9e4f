"""A data file the driver read but a worker cannot (another node, no shared filesystem, not in the job's working
dir): the trial-side loading path fails with one line naming the file and the node, and the driver puts that line
on the trial's FAILED run. Without a cluster: the trial's own loading function on a missing file, and the driver's
callback on a trial whose error Tune recorded."""
from __future__ import annotations

import json
import socket
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import ray.util

from sparsebench.methods import DatasetError, RunConfig
from sparsebench.workflows import ray_job, search, tracking
from sparsebench.workflows.trainable import trial_trainer
from sparsebench.workflows.trial import MlflowTrialCallback


def _table(path):
    y = np.arange(30) % 2
    pd.DataFrame({"f": np.random.default_rng(0).normal(size=30) + y, "label": y}).to_csv(path, index=False)


def test_a_worker_without_the_file_fails_with_one_line_naming_it_and_the_node(tmp_path):
    data = tmp_path / "wine.csv"
    _table(data)
    cfg = RunConfig.from_flat({"method": "dense", "data.dataset": str(data), "train.epochs": 1})
    assert trial_trainer(cfg).data.info.name == "wine.csv"   # where the file is, the trial loads it
    data.unlink()                                            # a node where it is not
    with pytest.raises(DatasetError) as e:
        trial_trainer(cfg)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"{data}: no such file or folder on node {ray.util.get_node_ip_address()} "
                          f"(host {socket.gethostname()})")
    assert "--working-dir" in msg and "docs/cluster.md" in msg


def test_the_failed_run_carries_the_workers_line(tmp_path, capsys):
    line = "sparsebench.methods.data.types.DatasetError: /data/wine.csv: no such file or folder on node 10.0.0.7"
    traceback = f"Failure # 1\nray::ImplicitFunc.train() (pid=1, ip=10.0.0.7)\n  File \"x.py\", line 1\n{line}\n"
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    c = tracking.client(uri)
    exp_id = tracking.get_or_create_experiment(c, "search/x")
    tracking.start_parent_run(c, exp_id, "study-x", "dense-search", tags={}, params={})
    cb = MlflowTrialCallback(uri, "search/x", "study-x", stage="search", decode=lambda x: x, tags={}, max_epochs=1)
    cfg = RunConfig.from_flat({"method": "dense", "train.epochs": 1})
    trial = SimpleNamespace(trial_id="t1", config=cfg.flat(), last_result={}, get_error=lambda: traceback)
    cb.on_trial_start(0, [], trial)
    cb.on_trial_error(0, [], trial)
    (run,) = c.search_runs([exp_id], f"tags.`{tracking.TAG_KIND}` = 'trial'")
    assert run.info.status == "FAILED" and run.data.tags["error"] == line
    assert capsys.readouterr().out.strip().endswith(f"failed   epoch   0 val_acc nan test_acc nan: {line}")


def _in_job(monkeypatch, working_dir: bool = True):
    runtime_env = {"working_dir": "gcs://_ray_pkg_0123.zip"} if working_dir else {}
    monkeypatch.setenv(ray_job.JOB_CONFIG_VAR, json.dumps({"runtime_env": runtime_env, "metadata": {}}))


def test_a_file_inside_the_jobs_working_dir_reaches_each_trial_as_its_nodes_copy(tmp_path, monkeypatch):
    """Each node unpacks the job's working dir in its own session folder: the driver names a shipped file relative
    to it, and a trial finds it under the folder its worker started in (TUNE_ORIG_WORKING_DIR)."""
    head, node = tmp_path / "head_pkg", tmp_path / "node_pkg"
    for root in (head, node):
        (root / "mydata").mkdir(parents=True)
        _table(root / "mydata" / "wine.csv")
    outside = tmp_path / "shared.csv"
    _table(outside)
    monkeypatch.chdir(head)
    _in_job(monkeypatch)
    assert search.data_path("mydata/wine.csv") == "mydata/wine.csv"
    assert search.data_path(str(head / "mydata" / "wine.csv")) == "mydata/wine.csv"
    assert search.data_path(str(outside)) == str(outside)              # a shared filesystem: absolute
    assert search.data_path("digits") == "digits"

    monkeypatch.delenv(ray_job.JOB_CONFIG_VAR)                      # now on a worker of another node
    monkeypatch.chdir(tmp_path)                                         # Tune moved the trial to its own folder
    monkeypatch.setenv(ray_job.ORIG_DIR_VAR, str(node))
    cfg = RunConfig.from_flat({"method": "dense", "data.dataset": "mydata/wine.csv",
                               "data.test_dataset": "mydata/wine.csv", "train.epochs": 1})
    tr = trial_trainer(cfg)
    assert tr.cfg.data.dataset == str(node / "mydata" / "wine.csv")
    assert tr.cfg.data.test_dataset == str(node / "mydata" / "wine.csv")
    (node / "mydata" / "wine.csv").unlink()                             # this node's copy is missing
    with pytest.raises(DatasetError) as e:
        trial_trainer(cfg)
    assert str(e.value).startswith(f"{node / 'mydata' / 'wine.csv'}: no such file or folder on node ")


def test_outside_a_job_or_without_a_working_dir_a_file_is_absolute(tmp_path, monkeypatch):
    (tmp_path / "wine.csv").touch()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ray_job.JOB_CONFIG_VAR, raising=False)
    assert search.data_path("wine.csv") == str(tmp_path / "wine.csv")
    _in_job(monkeypatch, working_dir=False)                             # `ray job submit` without --working-dir
    assert search.data_path("wine.csv") == str(tmp_path / "wine.csv")
    monkeypatch.setenv(ray_job.JOB_CONFIG_VAR, "{not json")
    assert search.data_path("wine.csv") == str(tmp_path / "wine.csv")
    assert ray_job.node_path(str(tmp_path / "wine.csv")) == str(tmp_path / "wine.csv")
    assert ray_job.node_path("") == ""


def test_variables_the_jobs_runtime_env_carries_are_not_passed_again(monkeypatch):
    """`ray job submit --runtime-env-json '{"env_vars": {...}}'`: ray.init with the same variable in its own runtime
    env fails ("Failed to merge the Job's runtime env"), so the driver passes only the others."""
    monkeypatch.setenv("SPARSEBENCH_METHOD_PATH", "/opt/my_methods")
    monkeypatch.setenv("SPARSEBENCH_HOLD_DIR", "/tmp/holds")
    monkeypatch.delenv("SPARSEBENCH_HOLD_EPOCH", raising=False)
    names = ("SPARSEBENCH_METHOD_PATH", "SPARSEBENCH_HOLD_DIR", "SPARSEBENCH_HOLD_EPOCH")
    monkeypatch.delenv(ray_job.JOB_CONFIG_VAR, raising=False)
    assert ray_job.driver_env_vars(names) == {"SPARSEBENCH_METHOD_PATH": "/opt/my_methods",
                                              "SPARSEBENCH_HOLD_DIR": "/tmp/holds"}
    monkeypatch.setenv(ray_job.JOB_CONFIG_VAR, json.dumps(
        {"runtime_env": {"env_vars": {"SPARSEBENCH_METHOD_PATH": "/opt/my_methods"}}}))
    assert ray_job.driver_env_vars(names) == {"SPARSEBENCH_HOLD_DIR": "/tmp/holds"}
