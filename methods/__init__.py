"""sparsebench methods: pure PyTorch. Every method, one training loop, one metrics module.

Rooms, in layer order (a room imports only rooms before it; tests/test_layering.py checks it):
`data/` (datasets), `nn/` (building blocks: layers, models, optimizers, regularisers), `core/` (registry, config,
the Method contract, optimisers, metrics, the Trainer), `families/` (the registered methods, discovered on import).
This package never imports ray, optuna or mlflow.
"""
from . import families  # noqa: F401  (discovery registers every method)
from .core import metrics
from .core.config import ConfigError, DataConfig, RunConfig, TrainConfig
from .core.registry import UnknownMethodError, get_method, list_methods, register_method
from .core.train import Trainer, train
from .data import DatasetError, list_datasets, load_dataset

__all__ = ["ConfigError", "DataConfig", "DatasetError", "RunConfig", "TrainConfig", "Trainer", "UnknownMethodError",
           "get_method", "list_datasets", "list_methods", "load_dataset", "metrics", "register_method", "train"]
