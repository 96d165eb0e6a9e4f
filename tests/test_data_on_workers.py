"""A data file the driver read but a worker cannot (another node, no shared filesystem, not in the job's working
dir): the trial-side loading path fails with one line naming the file and the node, and the driver puts that line
on the trial's FAILED run. Without a cluster: the trial's own loading function on a missing file, and the driver's
callback on a trial whose error Tune recorded."""
from __future__ import annotations

import socket
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import ray.util

from sparsebench.methods import DatasetError, RunConfig
from sparsebench.workflows import tracking
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
