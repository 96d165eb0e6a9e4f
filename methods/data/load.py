"""`load_dataset`: a registered set as tensors on the trial's device, split, subset and standardised.

Train/validation split: a permutation of the (official or holdout) training set by `data.split_seed`,
which is fixed across trials (not the training seed) so that the val_acc of different trials of a search
compare. `data.max_train` keeps the first samples of that permutation (so the validation split does not
change). `data.max_test` keeps a random subset of the test split, also chosen by `data.split_seed` (from a
stream of its own), as the group's limited-data Fashion-MNIST experiment picks 2 000 train / 1 000 test
samples by seed (dcmocanu/sparse-evolutionary-artificial-neural-networks,
Tutorial-IJCAI-2019-Scalable-Deep-Learning); the subset keeps the official order, and a smaller `max_test`
gives a subset of a larger one.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .files import formats_help, load_file, looks_like_path
from .registry import entry as dataset_entry
from .registry import list_datasets
from .splits import MAX_TEST_STREAM, STANDARDIZE_EPS, arrays_checksum, standardize, val_split
from .types import DataInfo, Dataset, DatasetError, DataSpec


def load_dataset(cfg: DataSpec, device: torch.device | str = "cpu", root: Path | None = None) -> Dataset:
    """Load, split (train/val by `cfg.split_seed`), subset (max_train, max_test), standardise where the
    dataset asks for it (training statistics only) and move to `device`."""
    x_tr, y_tr, x_te, y_te, source, standardize_features = _arrays(cfg, root)
    if len(x_tr) != len(y_tr) or len(x_te) != len(y_te):
        raise DatasetError(f"{cfg.dataset}: images and labels differ in count ({len(x_tr)} vs {len(y_tr)}, {len(x_te)} vs {len(y_te)})")
    checksum = arrays_checksum(x_tr, y_tr, x_te, y_te)
    num_classes = int(max(y_tr.max(), y_te.max())) + 1
    n_val = max(1, int(round(cfg.val_fraction * len(x_tr))))
    if n_val >= len(x_tr):
        raise DatasetError(f"{cfg.dataset}: data.val_fraction={cfg.val_fraction} leaves no training samples out of {len(x_tr)}")
    train_idx, val_idx = val_split(y_tr, n_val, cfg.split_seed)
    if cfg.max_train:
        train_idx = train_idx[: cfg.max_train]
    if cfg.max_test and cfg.max_test < len(x_te):
        # a random subset by split_seed, kept in the official order; a prefix of one permutation, so nested
        keep = np.sort(np.random.default_rng([cfg.split_seed, MAX_TEST_STREAM]).permutation(len(x_te))[: cfg.max_test])
        x_te, y_te = x_te[keep], y_te[keep]
    x_train, x_val = x_tr[train_idx], x_tr[val_idx]
    if standardize_features:
        x_train, x_val, x_te = standardize(x_train, x_val, x_te)
        source += f"; standardised per feature with the training samples' mean and std, (x - mean) / (std + {STANDARDIZE_EPS:g})"
    t = torch.from_numpy
    ds = Dataset(t(np.ascontiguousarray(x_train)), t(y_tr[train_idx]), t(np.ascontiguousarray(x_val)),
                 t(y_tr[val_idx]), t(np.ascontiguousarray(x_te)), t(np.ascontiguousarray(y_te)),
                 DataInfo(dataset_label(cfg.dataset), tuple(x_tr.shape[1:]), num_classes, len(train_idx), n_val, len(x_te), checksum, source))
    return ds.to(device)


def dataset_label(dataset: str) -> str:
    """A registered name as it is; a file by its name (the place it lies is not part of the data)."""
    return dataset if dataset in list_datasets() else Path(dataset).name


def _arrays(cfg: DataSpec, root: Path | None):
    """(x_train, y_train, x_test, y_test, source, standardize) of a registered set or of a user's file (files.py)."""
    target, test_dataset = getattr(cfg, "target", ""), getattr(cfg, "test_dataset", "")
    if cfg.dataset in list_datasets():
        for key, value in (("data.target", target), ("data.test_dataset", test_dataset)):
            if value:
                raise DatasetError(f"{key}={value!r} is for a dataset given as a file; {cfg.dataset!r} is a built-in set")
        entry = dataset_entry(cfg.dataset)
        return (*entry.loader(root, cfg.split_seed), entry.standardize)
    if not looks_like_path(cfg.dataset):
        raise DatasetError(f"unknown dataset {cfg.dataset!r}; available: {', '.join(list_datasets())}, "
                           f"or {formats_help()}")
    return load_file(cfg.dataset, target, test_dataset, cfg.split_seed)
