"""Splits and feature scaling shared by the loaders: holdouts for sets without an official test split, the
train/validation split by `data.split_seed`, per-feature standardisation with training statistics, checksums."""
from __future__ import annotations

import hashlib

import numpy as np

from .types import DatasetError, one_line


def stratified_holdout(x: np.ndarray, y: np.ndarray, seed: int, name: str = "<data>"):
    """(x_train, y_train, x_test, y_test): 2/3 train (int(n * 2 / 3) samples, as the authors' code takes) and
    1/3 test, stratified by label, drawn with `seed`."""
    from sklearn.model_selection import train_test_split

    n_train = int(len(y) * 2 / 3)
    try:
        x_tr, x_te, y_tr, y_te = train_test_split(x, y, train_size=n_train, test_size=len(y) - n_train,
                                                  random_state=seed, stratify=y)
    except ValueError as e:  # e.g. a class with a single sample cannot be stratified
        raise DatasetError(f"{name}: cannot draw a stratified 1/3 test holdout ({one_line(e)})") from None
    return x_tr, y_tr, x_te, y_te


# Per-feature standardisation (x - mean) / (std + 1e-4) with the training statistics: the authors' 2019
# SET-MLP code (wiegerw/SET-MLP-ONE-MILLION-NEURONS, set_mlp_sparse_data_structures.py; np.std, ddof 0).
STANDARDIZE_EPS = 1e-4


def standardize(x_train: np.ndarray, *others: np.ndarray, eps: float = STANDARDIZE_EPS) -> tuple[np.ndarray, ...]:
    """`x_train` and every array of `others` as (x - mean) / (std + eps), mean and std per feature of `x_train`."""
    mean = x_train.mean(axis=0, dtype=np.float64)
    std = x_train.std(axis=0, dtype=np.float64)
    scale = std + eps
    # A feature constant in the training split carries no information for training, but the authors' formula
    # would multiply any different val/test value by 1/eps = 1e4 (up to 1e6 in arcene and the text sets):
    # such features are set to 0 in every split (our deviation from the authors' code).
    keep = std > 0
    return tuple((np.where(keep, (a - mean) / scale, 0.0)).astype(np.float32) for a in (x_train, *others))


def arrays_checksum(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(str(a.shape).encode() + str(a.dtype).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()



def fixed_holdout(x: np.ndarray, y: np.ndarray):
    """(x_train, y_train, x_test, y_test): the scikit-learn bundled sets have no official split, so a fixed
    stratified 25% test holdout (random_state 0), the same for every config (split_seed unused)."""
    from sklearn.model_selection import train_test_split

    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    return x_tr, y_tr, x_te, y_te



MAX_TEST_STREAM = 1  # max_test draws from SeedSequence([split_seed, 1]): independent of the val permutation


def val_split(y: np.ndarray, n_val: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices. Stratified by class when every class can give a sample to both sides, so that small
    sets (5 validation samples of lung_small) keep their class balance; else a plain seeded permutation."""
    from sklearn.model_selection import train_test_split

    counts = np.bincount(y)
    counts = counts[counts > 0]
    idx = np.arange(len(y))
    if counts.min() >= 2 and len(counts) <= n_val <= len(y) - len(counts):
        train_idx, val_idx = train_test_split(idx, test_size=n_val, random_state=seed, stratify=y)
        return train_idx, val_idx
    perm = np.random.default_rng(seed).permutation(len(y))
    return perm[n_val:], perm[:n_val]
