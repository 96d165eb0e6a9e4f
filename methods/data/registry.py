"""Dataset registry: name -> loader(root, split_seed) returning (x_train, y_train, x_test, y_test, source) as numpy
arrays (features float32 shaped (N, ...), labels int64 0..C-1) and a provenance string. Loaders live in
`methods/data/sources/`, one module per source family, and register on import; this module imports none of them."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .types import DatasetError


@dataclass(frozen=True)
class DatasetEntry:
    loader: Callable[[Path | None, int], tuple]
    family: str  # groups the names in list_datasets()
    standardize: bool  # load_dataset standardises the features with the statistics of the training samples


_REGISTRY: dict[str, DatasetEntry] = {}


def register_dataset(name: str, *, family: str = "images", standardize: bool = False):
    """Register `fn(root, split_seed)`. `split_seed` is for datasets without an official test split that
    draw their test holdout by it; `standardize=True` makes load_dataset standardise the features per
    feature with the statistics of the samples actually trained on (after the val split and max_train)."""
    def wrap(fn):
        _REGISTRY[name] = DatasetEntry(fn, family, standardize)
        return fn

    return wrap


def list_datasets(family: str | None = None) -> list[str]:
    """Registered names (of one `family` if given), grouped by family in the order the families were
    registered (the image sets first), sorted within a family."""
    families = list(dict.fromkeys(e.family for e in _REGISTRY.values()))
    names = sorted(_REGISTRY, key=lambda n: (families.index(_REGISTRY[n].family), n))
    return [n for n in names if family is None or _REGISTRY[n].family == family]


def check_dataset_name(name: str) -> None:
    if name not in _REGISTRY:
        raise DatasetError(f"unknown dataset {name!r}; available: {', '.join(list_datasets())}")



def entry(name: str) -> DatasetEntry:
    """The registered entry of `name`, or DatasetError listing the available names."""
    check_dataset_name(name)
    return _REGISTRY[name]
