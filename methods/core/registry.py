"""Method registry: `@register_method("name")` on a `Method` subclass makes it available to the one
training loop, to every parameterized test and to every workflow (timm's `@register_model` pattern).
"""
from __future__ import annotations

# This module imports nothing of the package (the layer order's floor): classes are stored as `type`, and the
# Method contract is methods/core/method.py.
_METHODS: dict[str, type] = {}


class UnknownMethodError(ValueError):
    """Raised for a method name that is not registered; the message lists the registered ones."""


def register_method(name: str):
    """Class decorator: register a `Method` subclass under `name` (lower-case, unique)."""

    def wrap(cls):
        if name in _METHODS and _METHODS[name] is not cls:
            raise ValueError(f"method {name!r} is registered twice ({_METHODS[name].__qualname__}, {cls.__qualname__})")
        cls.name = name
        _METHODS[name] = cls
        return cls

    return wrap


def list_methods() -> list[str]:
    """Registered method names, sorted."""
    return sorted(_METHODS)


def get_method(name: str) -> type:
    try:
        return _METHODS[name]
    except KeyError:
        raise UnknownMethodError(f"unknown method {name!r}; registered methods: {', '.join(list_methods())}") from None
