"""The methods table, made from the registry: `sparsebench methods` prints it and docs/methods.md carries it
between its `methods-table` markers (`python3 scripts/update_docs.py` rewrites that block). A method added as one
file + one YAML appears here with no edit (tests/test_adding_a_method.py)."""
from __future__ import annotations

import sys
from pathlib import Path

from sparsebench.methods import get_method, list_methods

from .search_space import default_path

START, END = "<!-- methods-table:start -->", "<!-- methods-table:end -->"


def _module_file(name: str) -> str:
    """Where a method is defined: methods/families/<file>.py, or the external file's path."""
    path = Path(sys.modules[get_method(name).__module__].__file__)
    parts = path.parts
    return "/".join(parts[parts.index("methods"):]) if "families" in parts and "methods" in parts else str(path)


def rows() -> list[dict[str, str]]:
    out = []
    for name in list_methods():
        cls = get_method(name)
        space = default_path(name)
        out.append({"method": name, "what": cls.summary or (cls.__doc__ or "").strip().split("\n")[0],
                    "source": cls.source, "file": _module_file(name),
                    "search space": f"search_spaces/{space.name}" if space.parent.name == "search_spaces" else str(space)})
    return out


def markdown() -> str:
    cols = ["method", "what", "source", "file", "search space"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows():
        cells = [f"`{r['method']}`", r["what"].replace("|", "\\|"), r["source"].replace("|", "\\|"), f"`{r['file']}`",
                 f"`{r['search space']}`"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def with_table(text: str) -> str:
    """`text` (docs/methods.md) with the block between the markers replaced by the current table."""
    if START not in text or END not in text:
        raise ValueError(f"no {START} ... {END} block")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{markdown()}\n{END}{tail}"
