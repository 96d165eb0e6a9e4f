"""CIFAR-10 from the authors' python tarball (Krizhevsky 2009, "Learning multiple layers of features from tiny
images"; https://www.cs.toronto.edu/~kriz/cifar.html), read from `$SPARSEBENCH_DATA/cifar-10/` or downloaded
there.

The tarball is verified by its sha256 before it is opened, and nothing in it is unpickled unless it passed.
Even then the batches go through a restricted unpickler that resolves only numpy's array reconstruction
globals: a batch is a dict of a uint8 array (`data`, N x 3072: the 1024 red, then green, then blue values of a
32 x 32 image, row-major, as cifar.html describes) and lists (`labels` 0..9, `filenames`, `batch_label`).
The batches were written by Python 2 (their strings are read as bytes, as cifar.html's `encoding='bytes'`).
Images become float32 in [0, 1] shaped (N, 3, 32, 32); `data_batch_1` .. `data_batch_5` (50 000) are the
training split and `test_batch` (10 000) the official test split.
"""
from __future__ import annotations

import io
import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np

from ..fetch import FileSource, RemoteFile, fetch_source
from ..registry import register_dataset
from ..types import DatasetError, one_line

# sha256 of cifar-10-python.tar.gz (170 498 071 bytes): the `file_hash` Keras pins for this URL
# (keras-team/keras, keras/src/datasets/cifar10.py); the same sha256 is recorded beside the md5 that cifar.html
# publishes, c58f30108f718f92721af3b95e74349a (kept here for reference; the sha256 is what is checked).
CIFAR10 = FileSource(
    folder="cifar-10",
    urls=("https://www.cs.toronto.edu/~kriz/",),
    files={"archive": RemoteFile("cifar-10-python.tar.gz",
                                 sha256_raw="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
                                 md5_gz="c58f30108f718f92721af3b95e74349a", compressed=False)},
    citation="Krizhevsky: Learning multiple layers of features from tiny images, 2009 (CIFAR-10 python version)",
)
CIFAR_DIR = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
PIXELS = 3 * 32 * 32
NUM_CLASSES = 10

# numpy's array reconstruction function, taken from ndarray's own pickling protocol so that its module path
# (numpy.core in the Python 2 batches, numpy._core when numpy >= 2 re-pickles) does not matter here.
_RECONSTRUCT = np.empty(0).__reduce__()[0]
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _BatchUnpickler(pickle.Unpickler):
    """Resolves only the globals a CIFAR batch needs; any other (a function to call, a class to build) is refused."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch") from None


def unpickle_batch(raw: bytes, name: str = "<bytes>") -> dict:
    """A CIFAR batch dict, its keys as bytes (Python 2 strings). Only numpy arrays, lists, strings and numbers."""
    try:
        batch = _BatchUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as e:  # UnpicklingError, EOFError, ValueError, ... from a damaged or hostile pickle
        raise DatasetError(f"{name}: not a CIFAR batch pickle ({one_line(e)})") from None
    if not isinstance(batch, dict):
        raise DatasetError(f"{name}: a CIFAR batch is a dict, got {type(batch).__name__}")
    return batch


def _batch_arrays(batch: dict, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images (N, 3072), int64 labels (N,)) of one batch, checked."""
    data, labels = batch.get(b"data"), batch.get(b"labels")
    if data is None or labels is None:
        keys = ", ".join(k.decode(errors="replace") if isinstance(k, bytes) else repr(k) for k in batch) or "none"
        raise DatasetError(f"{name}: no 'data' and 'labels' in the batch (keys: {keys})")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != PIXELS:
        what = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DatasetError(f"{name}: 'data' must be a uint8 array of N x {PIXELS} pixels, got {what}")
    try:
        y = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as e:
        raise DatasetError(f"{name}: 'labels' is not a list of integers ({one_line(e)})") from None
    if y.shape != (len(data),):
        raise DatasetError(f"{name}: {len(data)} images but 'labels' has shape {y.shape}")
    if len(y) and (y.min() < 0 or y.max() >= NUM_CLASSES):
        raise DatasetError(f"{name}: labels must be 0..{NUM_CLASSES - 1}, found {y.min()}..{y.max()}")
    return data, y


def parse_cifar_tarball(blob: bytes, name: str = "<bytes>") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test) from the bytes of a verified cifar-10-python.tar.gz: images float32
    (N, 3, 32, 32) in [0, 1], labels int64. Members are read in memory; nothing is extracted to disk."""
    parts = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
            for batch in (*TRAIN_BATCHES, TEST_BATCH):
                member = f"{CIFAR_DIR}/{batch}"
                try:
                    f = tar.extractfile(member)
                except KeyError:
                    f = None
                if f is None:
                    raise DatasetError(f"{name}: no file {member} in the archive")
                parts[batch] = _batch_arrays(unpickle_batch(f.read(), f"{name}:{member}"), f"{name}:{member}")
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DatasetError(f"{name}: not a readable .tar.gz archive ({one_line(e)}); delete it to download it again") from None

    def images(batches):
        x = np.concatenate([parts[b][0] for b in batches]).reshape(-1, 3, 32, 32).astype(np.float32)
        x /= 255.0  # in place: the training split is 600 MB as float32
        return x, np.concatenate([parts[b][1] for b in batches])

    x_tr, y_tr = images(TRAIN_BATCHES)
    x_te, y_te = images([TEST_BATCH])
    return x_tr, y_tr, x_te, y_te


# Family "cifar", not "images": list_datasets() sorts a family by name, and the listing has always begun with
# digits, fashion_mnist, mnist (the CLI's messages and their tests show that prefix).
@register_dataset("cifar10", family="cifar")
def _cifar10(root: Path | None, split_seed: int):
    source = CIFAR10  # looked up per call, so tests can point it at archives they write
    blob, path = fetch_source(source, "archive", root)  # sha256 checked here, before the archive is opened
    return (*parse_cifar_tarball(blob, path), f"{source.files['archive'].filename} from {source.citation}; official test split")
