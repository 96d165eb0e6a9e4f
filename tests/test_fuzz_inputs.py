"""Property-based fuzzing (Hypothesis) of every user input a file or a flag carries (issue 21): search-space YAML,
protocol YAML, the config overrides both hold, and the command-line flags. Whatever is generated, the command
either accepts it (it would then start Ray: the test stops it right there) or refuses it with exit 2 and one line
`sparsebench: error: ...`: never a traceback, never a started Ray, never a store or a result folder written.

The commands run in this process (`cli.main`), in a fresh empty working folder per case, with `search.search` and
`reproduce.reproduce` (the first step after validation) replaced by a stop, and `ray.init` by a failure.
"""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

import pytest
import ray
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sparsebench.workflows import cli, reproduce, search

REPO = Path(__file__).resolve().parents[1]
FUZZ = settings(max_examples=int(os.environ.get("SPARSEBENCH_FUZZ_EXAMPLES", "120")), deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


class Accepted(Exception):
    """The input passed every check: the command would start its trials now."""


def _accepted(*a, **k):
    raise Accepted


def _ray_started(*a, **k):
    raise AssertionError("ray.init called while checking the input")


@pytest.fixture
def stopped(monkeypatch):
    monkeypatch.setattr(search, "search", _accepted)
    monkeypatch.setattr(reproduce, "reproduce", _accepted)
    monkeypatch.setattr(ray, "init", _ray_started)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return monkeypatch


def outcome(argv_of, files: dict[str, bytes] | None = None) -> str:
    """Run `sparsebench <argv_of(folder)>` in a fresh empty folder holding `files`; 'accepted' or 'refused'.
    A refusal must be exit 2, one line, and leave the folder as it was."""
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        for name, data in (files or {}).items():
            (folder / name).write_bytes(data)
        before = sorted(p.name for p in folder.iterdir())
        argv = argv_of(folder)
        err, out = io.StringIO(), io.StringIO()
        cwd = os.getcwd()
        os.chdir(folder)
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                code = cli.main(argv)
        except Accepted:
            return "accepted"
        finally:
            os.chdir(cwd)
        lines = err.getvalue().strip().splitlines()
        assert code == cli.EXIT_USAGE, (argv, code, err.getvalue()[-2000:])
        assert len(lines) == 1 and lines[0].startswith("sparsebench: error: "), (argv, err.getvalue()[-2000:])
        assert sorted(p.name for p in folder.iterdir()) == before, (argv, lines[0])   # nothing written
        return "refused"


# ------------------------------------------------------------------ values YAML can hold
scalars = (st.none() | st.booleans() | st.integers(-10**30, 10**30) | st.floats() | st.text(max_size=12)
           | st.sampled_from(["1e-3", "0.1", "-1", "nan", ".inf", "relu", "sgd", "digits", "[64]", "yes", "~"]))
values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                      max_leaves=10)
# Config keys a user writes, with near misses and nonsense.
config_keys = st.sampled_from(["train.lr", "train.epochs", "train.batch_size", "train.optimizer", "train.momentum",
                               "train.seed", "train.schedule", "model.hidden", "model.activation", "model.dropout",
                               "model.epsilon", "model.zeta", "data.dataset", "data.val_fraction", "method", "train",
                               "model", "train.", ".lr", "", "train.lr.x", "bogus.key"]) | st.text(max_size=10)
param_specs = st.fixed_dictionaries({}, optional={
    "type": st.sampled_from(["float", "int", "categorical", "uniform", "", None, 3]),
    "low": values, "high": values, "log": values, "step": values, "choices": values, "bogus": values})
good_param = st.sampled_from([{"type": "float", "low": 0.01, "high": 0.1, "log": True},
                              {"type": "categorical", "choices": [[64], [128]]},
                              {"type": "int", "low": 8, "high": 64}])
search_docs = st.fixed_dictionaries({}, optional={
    "method": st.sampled_from(["dense", "set", "nonsense", "", None]) | values,
    "fixed": st.dictionaries(config_keys, values, max_size=4) | values,
    "space": st.dictionaries(config_keys, param_specs | good_param | values, max_size=4) | values,
    "extra": values})


def dump(doc) -> bytes:
    try:
        return yaml.safe_dump(doc, allow_unicode=True).encode()
    except (yaml.YAMLError, ValueError):
        return repr(doc).encode()


def search_argv(folder: Path) -> list[str]:
    return ["search", "--methods", "dense", "--search-space", str(folder / "space.yaml"), "--storage",
            str(folder / "results"), "--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}"]


VALID_SPACE = (REPO / "search_spaces" / "dense.yaml").read_bytes()


@FUZZ
@given(doc=search_docs)
def test_a_generated_search_space_is_accepted_or_refused_in_one_line(stopped, doc):
    event(outcome(search_argv, {"space.yaml": dump(doc)}))


@FUZZ
@given(data=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_search_space_bytes_are_accepted_or_refused_in_one_line(stopped, data):
    event(outcome(search_argv, {"space.yaml": data}))


@FUZZ
@given(cut=st.integers(0, len(VALID_SPACE)), length=st.integers(0, 40),
       insert=st.sampled_from([b"", b":", b"\t", b"- ", b"{", b"]", b"\n  space:\n", b"\xff\xfe", b"&a", b"*a",
                               b"!!python/object:os.system ", b"\nmethod: dense\n", b"  train.lr: 1\n"]))
def test_a_mutated_search_space_file_is_accepted_or_refused_in_one_line(stopped, cut, length, insert):
    """Textual damage to the shipped file: cut bytes out, put syntax in (duplicate keys, tabs, tags, aliases)."""
    event(outcome(search_argv, {"space.yaml": VALID_SPACE[:cut] + insert + VALID_SPACE[cut + length:]}))


# ------------------------------------------------------------------ protocol YAML
experiment_docs = st.fixed_dictionaries(
    {"name": st.sampled_from(["e1", "", None]) | values},
    optional={"dataset": st.sampled_from(["digits", "nonsense", ""]) | values,
              "datasets": st.lists(st.sampled_from(["digits", "nonsense"]), max_size=2) | values,
              "epochs": st.integers(-2, 3) | values, "seeds": st.integers(-1, 3) | values,
              "metric": st.sampled_from(["test_acc", "val_acc", "bogus"]) | values,
              "report": st.lists(st.sampled_from(["final", "best", "bogus"]), max_size=2) | values,
              "sweep": st.dictionaries(config_keys, st.lists(values, max_size=3), max_size=2) | values,
              # budgets (issue 16): sizes with suffixes, near misses, below the output layer of digits (650)
              "budgets": st.lists(st.sampled_from(["2k", "8k", 2000, 0, -5, "abc", "", "2k,8k", 600, 1e12, True]),
                                  max_size=3) | values,
              "budget_metric": st.sampled_from(["params_trainable", "weights_nonzero", "flops"]) | values,
              "common": st.dictionaries(config_keys, values, max_size=3) | values,
              "methods": st.dictionaries(st.sampled_from(["dense", "set", "nonsense"]),
                                         st.dictionaries(config_keys, values, max_size=2), max_size=2) | values,
              "published": st.lists(values, max_size=2) | values})
protocol_docs = st.fixed_dictionaries(
    {"paper": st.sampled_from(["paper", "fuzzed", ""]) | values},   # the file is paper.yaml: 'paper' is the valid name
    optional={"title": values, "arxiv": values, "experiments": st.lists(experiment_docs, max_size=2) | values})


def reproduce_argv(folder: Path, name: str = "paper.yaml") -> list[str]:
    return ["reproduce", str(folder / name), "--quick", "--storage", str(folder / "results"),
            "--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}", "--output", str(folder / "out")]


VALID_PROTOCOL = (REPO / "workflows" / "papers" / "baselines.yaml").read_bytes()


@FUZZ
@given(doc=protocol_docs)
def test_a_generated_protocol_is_accepted_or_refused_in_one_line(stopped, doc):
    event(outcome(reproduce_argv, {"paper.yaml": dump(doc)}))


@FUZZ
@given(cut=st.integers(0, len(VALID_PROTOCOL)), length=st.integers(0, 60),
       insert=st.sampled_from([b"", b":", b"\t", b"- ", b"{", b"\n  - name: dense_digits\n", b"\xc3", b"*adam",
                               b"\npaper: other\n", b"      train.lr: -1\n", b"    epochs: 0\n",
                               b"    budgets: [2k, 8k]\n", b"    budgets: [0]\n", b"    budget_metric: flops\n"]))
def test_a_mutated_protocol_file_is_accepted_or_refused_in_one_line(stopped, cut, length, insert):
    """The shipped baselines protocol with textual damage; only its digits experiment can be accepted (the others
    need data that is not here: their refusal names the missing file)."""
    doc = VALID_PROTOCOL[:cut] + insert + VALID_PROTOCOL[cut + length:]
    event(outcome(lambda f: [*reproduce_argv(f, "baselines.yaml"), "--experiment", "dense_digits"], {"baselines.yaml": doc}))


# ------------------------------------------------------------------ flags
flag_values = (st.sampled_from(["0", "-1", "1", "2", "1e9", "99999999999999999999", "nan", "inf", "-inf", "0.5", "1,2",
                                "", " ", "all", "dense", "dense,", ",", "dense,dense", "digits", "nonsense", "\x00",
                                "--epochs", "65536", "0x10"]) | st.text(max_size=8))
# Budgets (docs/search.md): lists with suffixes, near misses and the size metrics' names.
budget_values = (st.lists(st.sampled_from(["2k", "8k", "32k", "2000", "0", "-5", "abc", "", "1.5k", "2K", "1e3", "600",
                                           "99999999999k"]), max_size=4).map(",".join)
                 | st.sampled_from(["params_trainable", "weights_nonzero", "flops", "PARAMS", "pareto", "val_acc"]))
search_flags = st.dictionaries(
    st.sampled_from(["--methods", "--dataset", "--num-samples", "--epochs", "--seed", "--grace-period", "--final-seeds",
                     "--cpus-per-trial", "--gpus-per-trial", "--max-concurrent", "--checkpoint-seconds",
                     "--experiment", "--budgets", "--budget-metric", "--objective"]), flag_values | budget_values, max_size=4)


@FUZZ
@given(flags=search_flags)
def test_generated_search_flags_are_accepted_or_refused_in_one_line(stopped, flags):
    flags = {"--methods": "dense", **flags}

    def argv(folder: Path) -> list[str]:
        pairs = [f"{k}={v}" for k, v in flags.items()]   # `=`: a value may start with '-'
        return ["search", *pairs, "--storage", str(folder / "results"), "--tracking-uri",
                f"sqlite:///{folder / 'mlflow.db'}"]

    event(outcome(argv))


def test_the_fuzzers_reach_both_outcomes(stopped):
    """A fuzzer that only ever sees refusals (or only acceptances) explores nothing: the valid files pass."""
    assert outcome(search_argv, {"space.yaml": VALID_SPACE}) == "accepted"
    assert outcome(lambda f: [*reproduce_argv(f, "baselines.yaml"), "--experiment", "dense_digits"],
                   {"baselines.yaml": VALID_PROTOCOL}) == "accepted"
    assert outcome(search_argv, {"space.yaml": b"method: dense\nmethod: set\n"}) == "refused"   # duplicate key
