"""Rewrite the generated blocks of docs/ from the code: the methods table of docs/methods.md (workflows/catalog.py).
Run after adding a method: `python3 scripts/update_docs.py`; tests/test_adding_a_method.py fails while it is stale."""
from pathlib import Path

from sparsebench.workflows import catalog

path = Path(__file__).resolve().parents[1] / "docs" / "methods.md"
path.write_text(catalog.with_table(path.read_text()))
print(f"updated {path}")
