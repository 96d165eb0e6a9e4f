"""The data contract: what a loader returns to the Trainer and how a data error reads (one line)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch


class DatasetError(ValueError):
    """Missing, corrupt or unknown dataset. The message is one line naming the file or name."""



def one_line(e: BaseException) -> str:
    """An exception as one line (for DatasetError messages that wrap a library's error)."""
    return " ".join(f"{type(e).__name__}: {e}".split())


class DataSpec(Protocol):
    """What load_dataset reads of a run's data config (methods.core.config.DataConfig has these fields)."""
    dataset: str
    split_seed: int
    val_fraction: float
    max_train: int
    max_test: int
    # read with getattr(..., ""): only for a dataset given as a file (files.py)
    # target: str           the label column of a table (default: the last column)
    # test_dataset: str     a file holding the test split (default: a stratified holdout)


@dataclass(frozen=True)
class DataInfo:
    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    n_train: int
    n_val: int
    n_test: int
    checksum: str  # sha256 over the arrays as loaded (before the val split, subsets, standardisation): identifies the data exactly
    source: str

    @property
    def in_features(self) -> int:
        return int(np.prod(self.input_shape))


@dataclass
class Dataset:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    info: DataInfo

    def to(self, device: torch.device | str) -> "Dataset":
        moved = {k: getattr(self, k).to(device) for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")}
        return Dataset(**moved, info=self.info)
