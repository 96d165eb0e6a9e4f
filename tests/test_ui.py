"""`sparsebench ui` serves the MLflow UI on 127.0.0.1 against the same store the searches write."""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ui_serves_the_store(in_tmp_cwd):
    uri = f"sqlite:///{in_tmp_cwd / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri).create_experiment("search/digits")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "sparsebench.workflows", "ui", "--port", str(port)], cwd=in_tmp_cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                req = urllib.request.Request(f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/experiments/search",
                                             data=b'{"max_results": 10}', headers={"Content-Type": "application/json"})
                names = [e["name"] for e in json.load(urllib.request.urlopen(req, timeout=5))["experiments"]]
                break
            except OSError:
                assert proc.poll() is None, "the UI process exited"
                assert time.monotonic() < deadline, "the UI did not answer within 120 s"
                time.sleep(1)
        assert "search/digits" in names
    finally:
        import os

        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
