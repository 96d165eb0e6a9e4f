"""`sparsebench server` (workflows/server.py): a SQL store only, loopback by default, drivers checked and passwords
masked before anything starts. The running server is exercised by tests/test_cluster.py."""
from __future__ import annotations

import importlib.util
import sys

import pytest

from sparsebench.workflows.cli import main
from sparsebench.workflows.server import is_loopback, mask, server_command


@pytest.mark.parametrize("uri,message", [
    ("http://127.0.0.1:5000", "--backend-store-uri http://127.0.0.1:5000: a tracking server needs a SQL database"),
    ("file:///tmp/mlruns", "allowed schemes: sqlite, postgresql, mysql, mssql"),
    ("sqlite:///no/such/folder/mlflow.db", "expected sqlite:///<path to a database file> in an existing folder"),
    ("postgresql://alice:s3cret@db.lab/mlflow", "postgresql://alice:***@db.lab/mlflow: the postgresql driver "
                                                "'psycopg2' is not installed; pip install psycopg2-binary"),
])
def test_bad_backends_exit_2_with_one_line(uri, message, capsys):
    if uri.startswith("postgresql") and importlib.util.find_spec("psycopg2") is not None:
        pytest.skip("psycopg2 is installed here")
    assert main(["server", "--backend-store-uri", uri]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "s3cret" not in err


def test_defaults_bind_loopback_and_serve_artifacts(tmp_path):
    cmd = server_command(f"sqlite:///{tmp_path}/mlflow.db", str(tmp_path / "art"), "127.0.0.1", 5000, 4)
    assert cmd[:4] == [sys.executable, "-m", "mlflow", "server"]
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and "--serve-artifacts" in cmd
    assert cmd[cmd.index("--artifacts-destination") + 1] == str(tmp_path / "art")
    assert "--allowed-hosts" not in cmd and "--disable-security-middleware" not in cmd
    assert "--allowed-hosts" in server_command("sqlite:///x.db", "a", "0.0.0.0", 5000, 1, "mlflow.lab:5000")


def test_loopback_and_masking():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.5") and not is_loopback("mlflow.lab")
    assert mask("postgresql://u:p%40ss@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert mask("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"
