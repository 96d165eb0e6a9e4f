"""Datasets as tensors on the trial's device, with provenance and checksums: the lowest room of `methods`.

- `types`: the contract (DataInfo, Dataset, DatasetError); `registry`: name -> loader; `fetch`: canonical sources,
  download and sha256/md5 verification; `splits`: holdouts, the train/validation split, standardisation;
  `files`: the user's own files and image folders (one reader per format); `load`: `load_dataset`; `augment`:
  on-device augmentation presets; `sources/`: one module per source family.
- This package imports nothing else of `methods` (tests/test_layering.py).
"""
from . import sources  # noqa: F401  (each source module registers its datasets)
from .fetch import FileSource, RemoteFile, data_root, fetch_source
from .files import file_digest, looks_like_path
from .load import dataset_label, load_dataset
from .registry import check_dataset_name, list_datasets, register_dataset
from .splits import standardize, stratified_holdout
from .types import DataInfo, Dataset, DatasetError, DataSpec

__all__ = ["DataInfo", "DataSpec", "Dataset", "DatasetError", "FileSource", "RemoteFile", "check_dataset_name",
           "data_root", "dataset_label", "fetch_source", "file_digest", "list_datasets", "load_dataset", "looks_like_path", "register_dataset", "standardize",
           "stratified_holdout"]
