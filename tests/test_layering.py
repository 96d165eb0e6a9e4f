"""DESIGN.md walls: methods never import ray, optuna, mlflow or workflows."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

FORBIDDEN = {"ray", "optuna", "mlflow", "workflows"}
METHODS_DIR = Path(__file__).resolve().parents[1] / "methods"


def test_methods_sources_do_not_import_orchestration():
    for path in METHODS_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            for n in names:
                assert n.split(".")[0] not in FORBIDDEN, f"{path.name} imports {n}"


def test_importing_and_training_loads_no_orchestration_module():
    code = ("import sys, methods; methods.train(methods.RunConfig.from_flat({'method': 'dense', 'train.epochs': 1}));"
            f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {sorted(FORBIDDEN)!r}); print(bad); assert not bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
