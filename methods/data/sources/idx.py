"""MNIST and Fashion-MNIST: the original IDX `.gz` files, read from `$SPARSEBENCH_DATA/<folder>/` (default
`~/.cache/sparsebench/data`) or downloaded there on first use from the canonical URLs, verified (methods/data/fetch.py).
The test split is the official one. Pixels 0..255 become [0, 1], shape (N, 1, 28, 28)."""
from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..fetch import RemoteFile, data_root, fetch_file
from ..registry import register_dataset
from ..types import DatasetError


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
class IdxSource:
    folder: str
    urls: tuple[str, ...]  # base URLs, tried in order
    files: dict[str, RemoteFile]  # role (train_x, train_y, test_x, test_y) -> file
    citation: str


# sha256 of the decompressed MNIST files, computed from the official files (their md5s equal the official raw
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

# Fashion-MNIST: labels by sha256 of the decompressed content of the files published at the URLs below; images by the
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



def fetch_idx(source: IdxSource, root: Path | None = None, download: bool = True) -> dict[str, np.ndarray]:
    """The four arrays of an IDX dataset, verified; downloaded into `root/<folder>/` when missing."""
    folder = (root or data_root()) / source.folder
    return {role: parse_idx(fetch_file(folder, source.urls, spec, download), str(folder / spec.filename))
            for role, spec in source.files.items()}



def _idx_dataset(source: IdxSource, root: Path | None):
    a = fetch_idx(source, root)
    scale = lambda v: (v.astype(np.float32) / 255.0)[:, None, :, :]  # noqa: E731 - pixels 0..255 -> [0, 1]
    return scale(a["train_x"]), a["train_y"].astype(np.int64), scale(a["test_x"]), a["test_y"].astype(np.int64), source.citation


@register_dataset("mnist")
def _mnist(root: Path | None, split_seed: int):
    return _idx_dataset(MNIST, root)


@register_dataset("fashion_mnist")
def _fashion(root: Path | None, split_seed: int):
    return _idx_dataset(FASHION_MNIST, root)
