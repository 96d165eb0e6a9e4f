"""Errors a command reports without a traceback, in a module that imports nothing heavy (the CLI catches them
before Ray or MLflow is loaded). The others are defined beside the code that raises them (ConfigError, DatasetError,
SearchSpaceError, ProtocolError, StoreError, TableError)."""
from __future__ import annotations


class SearchInterrupted(RuntimeError):
    """The driver was interrupted (Ctrl-C): unfinished runs were marked KILLED; rerun the command to resume."""


class ResourceError(ValueError):
    """A trial asks for more than any node of the cluster has."""
