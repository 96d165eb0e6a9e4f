"""The sets bundled with scikit-learn (no download): `digits` (8x8 digits, 1797 samples, the embedded default) and
the small tabular sets `iris`, `wine`, `breast_cancer`. None has an official test split, so a fixed stratified 25%
holdout (random_state 0, independent of every config field) is the test split; the tabular sets are standardised
per feature with the training statistics."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from ..registry import register_dataset
from ..splits import fixed_holdout


@register_dataset("digits")
def _digits(root: Path | None, split_seed: int):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)  # pixel values are 0..16
    y = d.target.astype(np.int64)
    return (*fixed_holdout(x, y), "scikit-learn load_digits (UCI optdigits test part); fixed stratified 25% test holdout")



# The other small tabular sets bundled with scikit-learn (no download; its "Toy datasets" guide): loader function and
# the UCI record the data comes from. Their features are measurements on very different
# scales (wine's proline ~1e3 beside hue ~1), so they are standardised with the training statistics like the
# scikit-feature sets.
SKLEARN_TABULAR = {
    "iris": ("load_iris", "Fisher's iris (UCI Iris, doi 10.24432/C56C76)"),
    "wine": ("load_wine", "UCI Wine (Aeberhard, Forina, doi 10.24432/C5PC7J)"),
    "breast_cancer": ("load_breast_cancer", "UCI Breast Cancer Wisconsin (Diagnostic) (Wolberg, Street, Mangasarian, "
                                            "doi 10.24432/C5DW2B); labels as scikit-learn: 0 malignant, 1 benign"),
}


def _sklearn_tabular(name: str, root: Path | None, split_seed: int):
    import sklearn.datasets

    loader, origin = SKLEARN_TABULAR[name]
    d = getattr(sklearn.datasets, loader)()
    x, y = np.asarray(d.data, dtype=np.float32), np.asarray(d.target, dtype=np.int64)
    return (*fixed_holdout(x, y), f"scikit-learn {loader} ({origin}); fixed stratified 25% test holdout")


for _name in SKLEARN_TABULAR:
    register_dataset(_name, family="sklearn", standardize=True)(functools.partial(_sklearn_tabular, _name))
del _name
