"""Bad input: exit code 2, one line naming the value and what is allowed, nothing started, nothing written."""
from __future__ import annotations

import subprocess
import sys

import pytest
import ray

from sparsebench.workflows.cli import main

from .conftest import assert_refused

BAD = [
    (["search", "--methods", "nope"], "unknown method 'nope'; registered methods: dense"),
    (["search", "--methods", "dense", "--dataset", "imagenet"], "unknown dataset 'imagenet'; available: digits, fashion_mnist, mnist"),
    (["search", "--methods", "dense", "--epochs", "-3"], "--epochs: -3 must be >= 1"),
    (["search", "--methods", "dense", "--epochs", "two"], "--epochs: 'two' is not an integer"),
    (["search", "--methods", "dense", "--num-samples", "0"], "--num-samples: 0 must be >= 1"),
    (["search", "--methods", "dense", "--gpus-per-trial", "-1"], "--gpus-per-trial: -1 must be a finite number >= 0"),
    (["search", "--methods", "dense", "--cpus-per-trial", "nan"], "--cpus-per-trial: nan must be a finite number >= 0"),
    (["search", "--methods", "dense", "--cpus-per-trial", "0"], "--cpus-per-trial: 0 must be > 0"),
    (["search", "--methods", "dense", "--checkpoint-seconds", "-1"], "--checkpoint-seconds: -1 must be a finite number >= 0"),
    (["reproduce", "lp_sphere", "--checkpoint-seconds", "inf"], "--checkpoint-seconds: inf must be a finite number >= 0"),
    (["search", "--methods", "dense", "--seed", "-1"], "--seed: -1 must be in [0, 2**32 - 1]"),
    (["search", "--methods", "dense", "--seed", "4294967296"], "--seed: 4294967296 must be in [0, 2**32 - 1]"),
    (["search", "--methods", "dense", "--tracking-uri", "foo://bar"], "--tracking-uri foo://bar: unsupported scheme 'foo'"),
    (["search", "--methods", "dense", "--tracking-uri", "sqlite:////nonexistent/dir/m.db"], "folder /nonexistent/dir does not exist"),
    (["search", "--methods", "dense", "--storage", "/proc/nope"], "--storage /proc/nope: cannot create it"),
    (["ui", "--port", "99999"], "--port: 99999 must be <= 65535"),
    (["ui"], "no MLflow database there"),
    (["search", "--methods", "dense", "--search-space", "MISSING"], "MISSING: search space file not found"),
    (["search"], "the following arguments are required: --methods"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["table", "--format", "xml"], "invalid choice: 'xml'"),
]


@pytest.mark.parametrize("argv,message", BAD, ids=lambda a: " ".join(a) if isinstance(a, list) else "")
def test_bad_input_exits_2_with_one_line(argv, message, capsys, in_tmp_cwd):
    code = main(argv)
    assert_refused(code, capsys.readouterr().err, message, in_tmp_cwd)


def test_malformed_search_space_file(capsys, in_tmp_cwd):
    (in_tmp_cwd / "s.yaml").write_text("method: dense\nspace:\n  train.lr: {type: float, low: 1, high: 0.5}\n")
    assert main(["search", "--methods", "dense", "--search-space", "s.yaml"]) == 2
    assert "s.yaml: train.lr: low=1 must be < high=0.5" in capsys.readouterr().err
    assert sorted(p.name for p in in_tmp_cwd.iterdir()) == ["s.yaml"]


def test_corrupt_dataset_stops_before_anything_starts(capsys, in_tmp_cwd, monkeypatch):
    (in_tmp_cwd / "data" / "mnist").mkdir(parents=True)
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (in_tmp_cwd / "data" / "mnist" / name).write_bytes(b"not gzip")
    monkeypatch.setenv("SPARSEBENCH_DATA", str(in_tmp_cwd / "data"))
    assert main(["search", "--methods", "dense", "--dataset", "mnist"]) == 2
    assert "not a valid gzip file" in capsys.readouterr().err
    assert sorted(p.name for p in in_tmp_cwd.iterdir()) == ["data"]
    assert not ray.is_initialized()


def test_binary_search_space_and_non_sqlite_store(capsys, in_tmp_cwd):
    (in_tmp_cwd / "s.yaml").write_bytes(b"\xff\xfe\x00binary")
    assert main(["search", "--methods", "dense", "--search-space", "s.yaml"]) == 2
    assert "s.yaml: not a text file" in capsys.readouterr().err
    (in_tmp_cwd / "x.db").write_text("hello")
    assert main(["table", "--tracking-uri", f"sqlite:///{in_tmp_cwd / 'x.db'}"]) == 2
    assert "is not an SQLite database" in capsys.readouterr().err
    assert main(["search", "--methods", "dense", "--tracking-uri", f"sqlite:///{in_tmp_cwd}"]) == 2
    assert "is not an SQLite database" in capsys.readouterr().err
    assert not ray.is_initialized()


def test_table_without_database(capsys, in_tmp_cwd):
    assert main(["table"]) == 2
    assert "no MLflow database there" in capsys.readouterr().err


def test_console_entry_point_exit_code(in_tmp_cwd):
    """The real process: `python -m workflows` exits 2 and prints one line to stderr."""
    r = subprocess.run([sys.executable, "-m", "sparsebench.workflows", "search", "--methods", "dense", "--epochs", "0"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["sparsebench: error: search: argument --epochs: 0 must be >= 1"]
