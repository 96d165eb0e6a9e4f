"""sparsebench methods: pure PyTorch. Every method, one training loop, one metrics module.

Importing the package registers every method family (one module each). This package never imports
ray, optuna or mlflow (tests/test_layering.py checks it).
"""
from . import dense, diversity, lp_sphere, set_prune, spectral, spectral_filter  # noqa: F401  (each module registers its methods)
from .config import ConfigError, DataConfig, RunConfig, TrainConfig
from .data import DatasetError, list_datasets, load_dataset
from .registry import UnknownMethodError, get_method, list_methods, register_method
from .train import Trainer, train

__all__ = ["ConfigError", "DataConfig", "DatasetError", "RunConfig", "TrainConfig", "Trainer", "UnknownMethodError",
           "get_method", "list_datasets", "list_methods", "load_dataset", "register_method", "train"]
