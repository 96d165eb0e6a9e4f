"""The house's walls (docs/design.md): no import circle, a layer order that no import goes against, methods that
never import orchestration, and one installed namespace.

Every import statement counts, also the ones inside functions and under TYPE_CHECKING: a function-local import
that goes against the order is still a dependency, only a hidden one.
"""
from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS = {"methods": "sparsebench.methods", "workflows": "sparsebench.workflows", "search_spaces": "sparsebench.search_spaces"}
FORBIDDEN_IN_METHODS = {"ray", "optuna", "mlflow"}

# The layer order, lowest first: a module may import only modules of its own layer or of a lower one. Within a
# layer, the finer order of SUBLAYERS holds. Names are prefixes of dotted module names (the longest match wins).
LAYERS = [
    ["sparsebench.methods.data"],
    ["sparsebench.methods.nn"],
    ["sparsebench.methods.core"],
    ["sparsebench.methods.families"],
    ["sparsebench.methods", "sparsebench.search_spaces"],   # the package's public face (re-exports) and the YAML
    ["sparsebench.workflows"],
]
SUBLAYERS = {
    "sparsebench.methods.core": ["registry", "config", "budget", "optim", "method", "metrics", "hoyer_gamma", "train"],
    "sparsebench.methods.data": ["types", "fetch", "splits", "registry", "augment", "sources", "files", "load"],
    # workflows: leaves (no workflow import) < what trials need < the driver's parts < the runner < commands < CLI.
    "sparsebench.workflows": [
        "errors", "yaml_input", "checkpointing", "failpoints", "ray_job", "hardware", "system_metrics", "sqlite_seed", "plots", "search_space", "budgets",
        "protocol", "repro_table", "results_table", "tracking", "optuna_store", "server", "trainable", "trial", "tables", "catalog", "comparison",
        "runner", "search", "reproduce", "cli", "__main__",
    ],
}


def module_files() -> dict[str, Path]:
    out = {}
    for folder, dotted in ROOTS.items():
        for f in (REPO / folder).rglob("*.py"):
            parts = f.relative_to(REPO / folder).with_suffix("").parts
            name = ".".join((dotted, *parts))
            out[name.removesuffix(".__init__")] = f
    return out


MODULES = module_files()


def imports_of(name: str) -> list[tuple[str, int]]:
    """(imported module of this project, line) for every import statement of module `name`, anywhere in the file."""
    f = MODULES[name]
    package = name if f.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(f.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            subs = [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in MODULES]
            targets = subs or [mod]
        else:
            continue
        found += [(t, node.lineno) for t in targets if t in MODULES and t != name]
    return found


GRAPH = {m: imports_of(m) for m in MODULES}


def rank(name: str) -> tuple[int, int]:
    """(layer, sublayer) of a module: its longest matching prefix in LAYERS, then SUBLAYERS."""
    best = max(((len(p), i, p) for i, layer in enumerate(LAYERS) for p in layer
                if name == p or name.startswith(p + ".")), default=None)
    assert best is not None, f"{name} is in no layer of tests/test_layering.py"
    _, layer, prefix = best
    order = SUBLAYERS.get(prefix)
    if not order or name == prefix:
        return layer, -1 if name == prefix else 0
    head = name[len(prefix) + 1:].split(".")[0]
    assert head in order, f"{name}: add {head!r} to SUBLAYERS[{prefix!r}] in tests/test_layering.py"
    return layer, order.index(head)


def test_no_import_goes_against_the_layer_order():
    bad = []
    for m, targets in GRAPH.items():
        for t, line in targets:
            lm, lt = rank(m), rank(t)
            same_room = lm[0] == lt[0] and rank_prefix(m) == rank_prefix(t)
            # a package __init__ re-exports its room (rank -1), so it may import every module below it
            if lt[0] > lm[0] or (same_room and lm[1] != -1 and lt[1] > lm[1]):
                bad.append(f"{MODULES[m].relative_to(REPO)}:{line} imports {t}")
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def rank_prefix(name: str) -> str:
    return max((p for layer in LAYERS for p in layer if name == p or name.startswith(p + ".")), key=len)


def test_no_import_circle():
    """Tarjan's strongly connected components over every import of the project (function-local ones included)."""
    graph = {m: {t for t, _ in ts} for m, ts in GRAPH.items()}
    index, low, stack, on, circles, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            visit(v)
    assert not circles, circles


def test_the_layering_test_catches_a_wrong_import(tmp_path):
    """The order check is not vacuous: core importing a family, or data importing core, is flagged."""
    assert rank("sparsebench.methods.core.train") > rank("sparsebench.methods.nn.layers")
    assert rank("sparsebench.methods.families.dense")[0] > rank("sparsebench.methods.core.train")[0]
    assert rank("sparsebench.methods.core.registry") < rank("sparsebench.methods.core.config")
    assert rank("sparsebench.workflows.runner") < rank("sparsebench.workflows.search")


def test_the_registry_imports_nothing_of_the_project():
    assert GRAPH["sparsebench.methods.core.registry"] == []


def test_methods_never_import_orchestration_or_workflows():
    for m, f in MODULES.items():
        if not m.startswith("sparsebench.methods"):
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            for n in names:
                assert n.split(".")[0] not in FORBIDDEN_IN_METHODS, f"{f.relative_to(REPO)} imports {n}"
                assert not n.startswith("sparsebench.workflows"), f"{f.relative_to(REPO)} imports {n}"


def test_every_package_folder_is_installed_under_the_sparsebench_namespace():
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    packages = {m for m, f in MODULES.items() if f.name == "__init__.py"}
    assert packages == listed, (sorted(packages - listed), sorted(listed - packages))
    assert all(p.startswith("sparsebench.") for p in listed)
    assert cfg["package-dir"] == {v: k for k, v in ROOTS.items()}


@pytest.mark.slow
def test_importing_and_training_loads_no_orchestration_module():
    code = ("import sys, sparsebench.methods as m; m.train(m.RunConfig.from_flat({'method': 'dense', 'train.epochs': 1}));"
            f"bad = sorted(n for n in sys.modules if n.split('.')[0] in {sorted(FORBIDDEN_IN_METHODS)!r} "
            "or n.startswith('sparsebench.workflows')); print(bad); assert not bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO.parent)
    assert r.returncode == 0, r.stdout + r.stderr


def test_nothing_generic_is_importable_from_outside_the_tree():
    """Installed, only `sparsebench.*` exists: `import methods` from a folder outside the repository fails."""
    r = subprocess.run([sys.executable, "-c", "import importlib.util as u; print(u.find_spec('methods'), "
                        "u.find_spec('workflows'), u.find_spec('search_spaces'), u.find_spec('sparsebench.methods') is not None)"],
                       capture_output=True, text=True, timeout=120, cwd="/")
    assert r.stdout.split() == ["None", "None", "None", "True"], r.stdout + r.stderr


def test_tests_benchmarks_and_scripts_import_the_installed_namespace_only():
    """Run from the repository root, `import workflows` would load a second copy of the code from the source tree
    beside the installed `sparsebench.workflows` (and monkeypatching one would not touch the other)."""
    bad = []
    for folder in ("tests", "benchmarks", "scripts"):
        for f in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(f.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
                bad += [f"{f.relative_to(REPO)}:{node.lineno} imports {n}" for n in names if n.split(".")[0] in ROOTS]
    assert not bad, bad


def test_listing_methods_and_refusing_a_command_load_neither_ray_nor_mlflow():
    """`sparsebench methods` and a refused command line answer without Ray, Optuna or MLflow (seconds of imports:
    workflows/cli.py imports them in the commands that use them)."""
    code = ("import contextlib, io, sys; from sparsebench.workflows import cli\n"
            "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
            "    codes = [cli.main(['methods']), cli.main(['search', '--methods', 'nope']),"
            " cli.main(['search', '--dataset', 'nope.csv']), cli.main(['search', '--budgets', '2q'])]\n"
            "heavy = sorted({n.split('.')[0] for n in sys.modules} & {'ray', 'optuna', 'mlflow'}); print(codes, heavy)\n"
            "assert codes == [0, 2, 2, 2] and not heavy")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO.parent)
    assert r.returncode == 0, r.stdout + r.stderr
