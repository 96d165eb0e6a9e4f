"""Datasets as tensors on the trial's device, with provenance and checksums.

- `digits`: scikit-learn's bundled 8x8 digits (1797 samples), the embedded default. It has no official
  test split, so a fixed stratified 25% holdout (random_state 0, independent of every config field) is
  the test split.
- `mnist`, `fashion_mnist`: the original IDX `.gz` files, read from `$SPARSEBENCH_DATA/<folder>/` (default
  `~/.cache/sparsebench/data`) or downloaded there on first use from the canonical URLs. Every file is
  verified: sha256 of the *decompressed* content where known (re-compressed copies of the same data
  pass), else the md5 the dataset's authors publish for the `.gz`. The test split is the official one.

Train/validation split: a permutation of the official training set by `data.split_seed`, which is fixed
across trials (not the training seed) so that the val_acc of different trials of a search compare.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
import tempfile
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .config import DataConfig


class DatasetError(ValueError):
    """Missing, corrupt or unknown dataset. The message is one line naming the file or name."""


@dataclass(frozen=True)
class DataInfo:
    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    n_train: int
    n_val: int
    n_test: int
    checksum: str  # sha256 over the arrays as loaded (before the split): identifies the data exactly
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


# --------------------------------------------------------------------------------------------------
# IDX files (http://yann.lecun.com/exdb/mnist/, "FILE FORMATS FOR THE MNIST DATABASE")
# --------------------------------------------------------------------------------------------------
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def parse_idx(raw: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes: magic (0, 0, dtype code, ndim), ndim big-endian uint32 sizes, then the data."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DatasetError(f"{name}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{name}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise DatasetError(f"{name}: IDX size mismatch: header says {expected} bytes, file has {len(raw)}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def write_idx(array: np.ndarray, path: Path, compress: bool = True) -> None:
    """Write an array as an IDX file (used by the tests to make small datasets in the real format)."""
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09}
    raw = bytes([0, 0, codes[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    if compress:
        with gzip.open(path, "wb") as f:
            f.write(raw)
    else:
        Path(path).write_bytes(raw)


@dataclass(frozen=True)
class RemoteFile:
    filename: str
    sha256_raw: str | None = None  # sha256 of the decompressed bytes
    md5_gz: str | None = None      # md5 of the .gz as published by the dataset's authors


@dataclass(frozen=True)
class IdxSource:
    folder: str
    urls: tuple[str, ...]  # base URLs, tried in order
    files: dict[str, RemoteFile]  # role (train_x, train_y, test_x, test_y) -> file
    citation: str


# sha256 of the decompressed MNIST files (shared/datasets/README.md; their md5s equal the official raw
# files' 6bbc9ace..., a25bea73..., 2646ac64..., 27ae3e4e...). Mirrors: the official site is often
# unavailable, so the mirrors used by TensorFlow and torchvision are tried first.
MNIST = IdxSource(
    folder="mnist",
    urls=("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/",
          "http://yann.lecun.com/exdb/mnist/"),
    files={
        "train_x": RemoteFile("train-images-idx3-ubyte.gz", sha256_raw="ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
        "train_y": RemoteFile("train-labels-idx1-ubyte.gz", sha256_raw="65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
        "test_x": RemoteFile("t10k-images-idx3-ubyte.gz", sha256_raw="0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
        "test_y": RemoteFile("t10k-labels-idx1-ubyte.gz", sha256_raw="ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
    },
    citation="LeCun, Cortes, Burges: The MNIST database of handwritten digits",
)

# Fashion-MNIST: labels by sha256 of the decompressed content (shared/datasets/README.md); images by the
# md5 of the .gz published in zalandoresearch/fashion-mnist README.md (no sha256 is published).
FASHION_MNIST = IdxSource(
    folder="fashion-mnist",
    urls=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
          "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"),
    files={
        "train_x": RemoteFile("train-images-idx3-ubyte.gz", md5_gz="8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        "train_y": RemoteFile("train-labels-idx1-ubyte.gz", sha256_raw="bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                              md5_gz="25c81989df183df01b3e8a0aad5dffbe"),
        "test_x": RemoteFile("t10k-images-idx3-ubyte.gz", md5_gz="bef4ecab320f06d8554ea6380940ec79"),
        "test_y": RemoteFile("t10k-labels-idx1-ubyte.gz", sha256_raw="0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
                             md5_gz="bb300cfdad3c16e7a12a480ee83cd310"),
    },
    citation="Xiao, Rasul, Vollgraf: Fashion-MNIST, arXiv 1708.07747",
)


def data_root() -> Path:
    """`$SPARSEBENCH_DATA`, else `$XDG_CACHE_HOME/sparsebench/data`, else `~/.cache/sparsebench/data`."""
    if os.environ.get("SPARSEBENCH_DATA"):
        return Path(os.environ["SPARSEBENCH_DATA"]).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "sparsebench" / "data"


def _verify(path: Path, spec: RemoteFile) -> bytes:
    """Return the decompressed bytes of `path` if they match the known checksum, else raise DatasetError."""
    blob = path.read_bytes()
    try:
        raw = gzip.decompress(blob)
    except (OSError, EOFError) as e:
        raise DatasetError(f"{path}: not a valid gzip file ({e}); delete it to download it again") from None
    if spec.sha256_raw is not None:
        got = hashlib.sha256(raw).hexdigest()
        if got != spec.sha256_raw:
            raise DatasetError(f"{path}: checksum mismatch (sha256 of content {got[:16]}..., expected {spec.sha256_raw[:16]}...); "
                               f"delete it to download it again")
    elif spec.md5_gz is not None:
        got = hashlib.md5(blob).hexdigest()
        if got != spec.md5_gz:
            raise DatasetError(f"{path}: checksum mismatch (md5 {got}, expected {spec.md5_gz}); delete it to download it again")
    return raw


def _download(urls: tuple[str, ...], spec: RemoteFile, dest: Path) -> None:
    """Try each mirror; a file is moved under its real name only after it passed its checksum."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for base in urls:
        tmp = Path(tempfile.mkstemp(dir=dest.parent, suffix=".part")[1])
        try:
            with urllib.request.urlopen(base + spec.filename, timeout=60) as r, open(tmp, "wb") as f:
                shutil.copyfileobj(r, f)
            _verify(tmp, spec)  # a wrong page or a corrupt mirror falls through to the next URL
            os.replace(tmp, dest)  # atomic: a killed download never leaves a half file under the real name
            return
        except (OSError, DatasetError) as e:
            errors.append(f"{base}: {str(e).replace(str(tmp), 'download')}")
        finally:
            tmp.unlink(missing_ok=True)
    raise DatasetError(f"{spec.filename}: download failed from every source ({'; '.join(errors)}); "
                       f"put the file in {dest.parent} or set SPARSEBENCH_DATA")


def fetch_idx(source: IdxSource, root: Path | None = None, download: bool = True) -> dict[str, np.ndarray]:
    """The four arrays of an IDX dataset, verified; downloaded into `root/<folder>/` when missing."""
    folder = (root or data_root()) / source.folder
    out = {}
    for role, spec in source.files.items():
        path = folder / spec.filename
        if not path.exists():
            if not download:
                raise DatasetError(f"{path}: missing (downloads are off)")
            _download(source.urls, spec, path)
        out[role] = parse_idx(_verify(path, spec), str(path))
    return out


def _arrays_checksum(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(str(a.shape).encode() + str(a.dtype).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------
# Dataset registry: name -> function returning (x_train, y_train, x_test, y_test, source) as numpy arrays
# --------------------------------------------------------------------------------------------------
_LOADERS: dict[str, Callable[[Path | None], tuple]] = {}


def register_dataset(name: str):
    def wrap(fn):
        _LOADERS[name] = fn
        return fn

    return wrap


def list_datasets() -> list[str]:
    return sorted(_LOADERS)


def check_dataset_name(name: str) -> None:
    if name not in _LOADERS:
        raise DatasetError(f"unknown dataset {name!r}; available: {', '.join(list_datasets())}")


@register_dataset("digits")
def _digits(root: Path | None):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)  # pixel values are 0..16
    y = d.target.astype(np.int64)
    # No official split: a fixed stratified 25% test holdout, the same for every config.
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    return x_tr, y_tr, x_te, y_te, "scikit-learn load_digits (UCI optdigits test part); fixed stratified 25% test holdout"


def _idx_dataset(source: IdxSource, root: Path | None):
    a = fetch_idx(source, root)
    scale = lambda v: (v.astype(np.float32) / 255.0)[:, None, :, :]  # noqa: E731 - pixels 0..255 -> [0, 1]
    return scale(a["train_x"]), a["train_y"].astype(np.int64), scale(a["test_x"]), a["test_y"].astype(np.int64), source.citation


@register_dataset("mnist")
def _mnist(root: Path | None):
    return _idx_dataset(MNIST, root)


@register_dataset("fashion_mnist")
def _fashion(root: Path | None):
    return _idx_dataset(FASHION_MNIST, root)


def load_dataset(cfg: DataConfig, device: torch.device | str = "cpu", root: Path | None = None) -> Dataset:
    """Load, split (train/val by `cfg.split_seed`), subset and move to `device`."""
    check_dataset_name(cfg.dataset)
    x_tr, y_tr, x_te, y_te, source = _LOADERS[cfg.dataset](root)
    if len(x_tr) != len(y_tr) or len(x_te) != len(y_te):
        raise DatasetError(f"{cfg.dataset}: images and labels differ in count ({len(x_tr)} vs {len(y_tr)}, {len(x_te)} vs {len(y_te)})")
    checksum = _arrays_checksum(x_tr, y_tr, x_te, y_te)
    num_classes = int(max(y_tr.max(), y_te.max())) + 1
    perm = np.random.default_rng(cfg.split_seed).permutation(len(x_tr))
    n_val = max(1, int(round(cfg.val_fraction * len(x_tr))))
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    if len(train_idx) == 0:
        raise DatasetError(f"{cfg.dataset}: data.val_fraction={cfg.val_fraction} leaves no training samples out of {len(x_tr)}")
    if cfg.max_train:
        train_idx = train_idx[: cfg.max_train]
    if cfg.max_test:
        x_te, y_te = x_te[: cfg.max_test], y_te[: cfg.max_test]
    t = torch.from_numpy
    ds = Dataset(t(np.ascontiguousarray(x_tr[train_idx])), t(y_tr[train_idx]), t(np.ascontiguousarray(x_tr[val_idx])),
                 t(y_tr[val_idx]), t(np.ascontiguousarray(x_te)), t(np.ascontiguousarray(y_te)),
                 DataInfo(cfg.dataset, tuple(x_tr.shape[1:]), num_classes, len(train_idx), n_val, len(x_te), checksum, source))
    return ds.to(device)
