"""Reading a user's YAML file (a search space, a paper protocol): one error type, one line per problem.

PyYAML's safe loader keeps the last of two equal keys silently (`method: dense` then `method: set` is a `set`
space), so a mapping with a repeated key is refused here, with both lines. Its errors span several lines (a
"problem", a "context", a caret drawing); the message here is one line with the line and column.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class YamlInputError(ValueError):
    """Raised with one line; the callers wrap it into their own error type (SearchSpaceError, ProtocolError)."""


class _UniqueKeyLoader(yaml.SafeLoader):
    pass


def _mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict:
    loader.flatten_mapping(node)   # merge keys (<<: *alias) first, as SafeLoader does
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key, line = loader.construct_object(key_node, deep=True), key_node.start_mark.line + 1
        try:
            if key in seen:
                raise YamlInputError(f"line {line}: key {key!r} repeats the one on line {seen[key]}")
            seen[key] = line
        except TypeError:   # an unhashable key (a list or mapping used as a key)
            raise YamlInputError(f"line {line}: a key must be a plain value, not a {type(key).__name__}") from None
    return loader.construct_mapping(node, deep=True)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _where(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def read_yaml(path: Path) -> Any:
    """The document in `path`; YamlInputError (one line, without the path) if it cannot be read or parsed."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        raise YamlInputError(f"cannot read it ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise YamlInputError(f"not a text file (byte {e.start} is not UTF-8)") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except YamlInputError:
        raise
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e)
        raise YamlInputError(f"not valid YAML{_where(e)}: {' '.join(str(problem).split())}") from None
    except (RecursionError, OverflowError, ValueError) as e:  # e.g. deeply nested, or a huge number
        raise YamlInputError(f"not valid YAML: {type(e).__name__}: {' '.join(str(e).split())[:200]}") from None
