"""The registered method families, one module each, found by discovery: adding a method is one file here (a
`Method` subclass under `@register_method("name")`) plus one `search_spaces/<name>.yaml`, with no list to edit.

Modules whose name starts with `_` are shared helpers (`_mlp`: the MLP configuration) and are not imported as
families. Methods kept outside the package: every `*.py` in the directories of `$SPARSEBENCH_METHOD_PATH`
(separated by `os.pathsep`) is imported too, and its methods' search spaces may lie beside it as `<name>.yaml`
(workflows/search_space.py looks there after `search_spaces/`). Discovery runs once, when `methods` is imported,
in the driver and in every Ray worker alike (the variable travels with the trials' runtime environment).
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import sys
from pathlib import Path

METHOD_PATH_ENV = "SPARSEBENCH_METHOD_PATH"
EXTERNAL_PACKAGE = "sparsebench_external_methods"  # sys.modules prefix of methods imported from METHOD_PATH_ENV


class MethodPathError(ValueError):
    """A directory of $SPARSEBENCH_METHOD_PATH is missing, or one of its files does not import."""


def method_dirs() -> list[Path]:
    """The directories named by $SPARSEBENCH_METHOD_PATH, in order (empty entries skipped)."""
    return [Path(p).expanduser() for p in os.environ.get(METHOD_PATH_ENV, "").split(os.pathsep) if p.strip()]


def _import_file(path: Path) -> None:
    name = f"{EXTERNAL_PACKAGE}.{path.stem}"
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before exec: dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[name]
        raise MethodPathError(f"{path}: cannot import ({type(e).__name__}: {e}); fix the file or remove it from "
                              f"${METHOD_PATH_ENV}") from None


def discover() -> list[str]:
    """Import every family module of this package, then every file of $SPARSEBENCH_METHOD_PATH; their names. A
    broken external file does not break the import of the package: its one-line error is kept in
    DISCOVERY_ERRORS, which the CLI reports (exit 2) before it does anything."""
    names = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
            names.append(info.name)
    for folder in method_dirs():
        try:
            if not folder.is_dir():
                raise MethodPathError(f"{folder}: not a directory (named in ${METHOD_PATH_ENV})")
            for path in sorted(folder.glob("*.py")):
                _import_file(path)
                names.append(f"{EXTERNAL_PACKAGE}.{path.stem}")
        except MethodPathError as e:
            DISCOVERY_ERRORS.append(str(e))
    return names


def check_discovery() -> None:
    """Raise the first error of discovery (a broken $SPARSEBENCH_METHOD_PATH entry), if any."""
    if DISCOVERY_ERRORS:
        raise MethodPathError(DISCOVERY_ERRORS[0])


DISCOVERY_ERRORS: list[str] = []
FAMILIES = discover()
