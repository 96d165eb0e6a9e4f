"""Adding a method is one file + one YAML (docs/adding-a-method.md): a throwaway method written to a temporary
folder named in $SPARSEBENCH_METHOD_PATH is found by the CLI, the search-space loader, the Trainer and the methods
table, with no other edit; and docs/methods.md carries the table of the registered methods as the code makes it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sparsebench.workflows import catalog

REPO = Path(__file__).resolve().parents[1]

METHOD_FILE = '''
"""A throwaway method: logistic regression (an MLP without hidden layers)."""
from dataclasses import dataclass

from sparsebench.methods.core.config import ModelConfig, spec
from sparsebench.methods.core.method import Method
from sparsebench.methods.core.registry import register_method
from sparsebench.methods.nn.models import MLP


@dataclass(frozen=True)
class ToyConfig(ModelConfig):
    bias: bool = spec(True)


@register_method("toy_linear")
class ToyLinear(Method):
    summary = "logistic regression, for the one-file test"
    source = "none"
    Config = ToyConfig

    def build(self):
        return MLP((self.info.in_features, self.info.num_classes), bias=self.cfg.model.bias)
'''
SPACE_FILE = """method: toy_linear
fixed:
  train.batch_size: 64
space:
  train.lr: {type: float, low: 0.01, high: 0.2, log: true}
  model.bias: {type: categorical, choices: [true, false]}
"""
PROBE = textwrap.dedent("""
    import json
    from sparsebench.methods import RunConfig, Trainer, list_methods
    from sparsebench.workflows import catalog
    from sparsebench.workflows.search_space import load_search_space
    space = load_search_space("toy_linear")
    cfg = RunConfig.from_flat({**space.fixed, "method": "toy_linear", "train.epochs": 3})
    history = Trainer(cfg).fit()
    print(json.dumps({"methods": list_methods(), "fixed": space.fixed, "table": catalog.markdown(),
                      "val_acc": history[-1]["val_acc"], "params": history[-1]["params_trainable"]}))
""")


@pytest.fixture
def external(tmp_path):
    folder = tmp_path / "my_methods"
    folder.mkdir()
    (folder / "toy.py").write_text(METHOD_FILE)
    (folder / "toy_linear.yaml").write_text(SPACE_FILE)
    env = {**os.environ, "SPARSEBENCH_METHOD_PATH": str(folder)}
    return folder, env


def test_a_method_in_one_file_and_one_yaml_is_found_everywhere(external, tmp_path):
    folder, env = external
    r = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert "toy_linear" in out["methods"]
    assert out["fixed"] == {"train.batch_size": 64}                       # the YAML beside the file was read
    row = next(line for line in out["table"].splitlines() if "`toy_linear`" in line)
    assert "logistic regression" in row and str(folder / "toy.py") in row and str(folder / "toy_linear.yaml") in row
    assert out["params"] == 64 * 10 + 10                                   # digits: 8x8 inputs, 10 classes
    assert out["val_acc"] > 0.3                                            # trained: chance is 0.1
    # The CLI takes the name (it fails later, on --epochs 0, with one line and exit 2: nothing started).
    cli = subprocess.run([sys.executable, "-m", "sparsebench.workflows", "search", "--methods", "toy_linear", "--epochs", "0"],
                         env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert cli.returncode == 2 and "--epochs" in cli.stderr and "toy_linear" not in cli.stderr, cli.stderr
    listed = subprocess.run([sys.executable, "-m", "sparsebench.workflows", "methods"], env=env, capture_output=True,
                            text=True, timeout=300, cwd=tmp_path)
    assert listed.returncode == 0 and "`toy_linear`" in listed.stdout
    assert not any(tmp_path.glob("mlflow.db"))


def test_without_the_path_the_method_does_not_exist(external, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "SPARSEBENCH_METHOD_PATH"}
    cli = subprocess.run([sys.executable, "-m", "sparsebench.workflows", "search", "--methods", "toy_linear"],
                         env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert cli.returncode == 2 and "unknown method 'toy_linear'" in cli.stderr


@pytest.mark.parametrize("content, message", [
    ("raise RuntimeError('boom')", "cannot import (RuntimeError: boom)"),
    ("def broken(:\n", "cannot import (SyntaxError"),
])
def test_a_broken_method_file_is_one_line_and_exit_2(tmp_path, content, message):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "bad.py").write_text(content)
    env = {**os.environ, "SPARSEBENCH_METHOD_PATH": str(folder)}
    cli = subprocess.run([sys.executable, "-m", "sparsebench.workflows", "methods"], env=env, capture_output=True,
                         text=True, timeout=300, cwd=tmp_path)
    assert cli.returncode == 2, cli.stderr
    lines = cli.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and str(folder / "bad.py") in lines[0], cli.stderr


def test_a_missing_method_folder_is_one_line_and_exit_2(tmp_path):
    env = {**os.environ, "SPARSEBENCH_METHOD_PATH": str(tmp_path / "nowhere")}
    cli = subprocess.run([sys.executable, "-m", "sparsebench.workflows", "methods"], env=env, capture_output=True,
                         text=True, timeout=300, cwd=tmp_path)
    assert cli.returncode == 2 and "nowhere: not a directory" in cli.stderr and len(cli.stderr.strip().splitlines()) == 1


def test_docs_methods_table_is_the_registry_table():
    """docs/methods.md shows what `sparsebench methods` prints; rerun scripts/update_docs.py when this fails."""
    text = (REPO / "docs" / "methods.md").read_text()
    assert catalog.with_table(text) == text, "docs/methods.md is stale: run python3 scripts/update_docs.py"
