"""Errors a command reports without a traceback, in a module that imports nothing heavy (the CLI catches them
before Ray or MLflow is loaded). The others are defined beside the code that raises them (ConfigError, DatasetError,
SearchSpaceError, ProtocolError)."""
from __future__ import annotations


class SearchInterrupted(RuntimeError):
    """The driver was interrupted (Ctrl-C): unfinished runs were marked KILLED; rerun the command to resume."""


class ResourceError(ValueError):
    """A trial asks for more than any node of the cluster has."""


class StoreError(ValueError):
    """The MLflow store or the results storage cannot be used; one line naming it (raised by workflows/tracking.py,
    server.py, runner.py)."""


class TableError(ValueError):
    """A table cannot be made from the store's runs (workflows/tables.py)."""
