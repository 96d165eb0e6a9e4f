"""Datasets as tensors on the trial's device, with provenance and checksums.

- `digits`: scikit-learn's bundled 8x8 digits (1797 samples), the embedded default. It has no official
  test split, so a fixed stratified 25% holdout (random_state 0, independent of every config field) is
  the test split.
- `iris`, `wine`, `breast_cancer` (family "sklearn"): the other small tabular sets bundled with scikit-learn,
  with digits' fixed stratified 25% test holdout, standardised per feature with the training statistics.
- `mushroom`, `climate`, `dna` (family "uci"): see `methods/data_uci.py`; `cifar10` (family "cifar"): see
  `methods/data_cifar.py`; `tiny_imagenet` (family "tiny_imagenet"): see `methods/data_tiny_imagenet.py`. These
  modules read whole files through `fetch_source` (below) and register on import.
- `mnist`, `fashion_mnist`: the original IDX `.gz` files, read from `$SPARSEBENCH_DATA/<folder>/` (default
  `~/.cache/sparsebench/data`) or downloaded there on first use from the canonical URLs. Every file is
  verified: sha256 of the *decompressed* content where known (re-compressed copies of the same data
  pass), else the md5 the dataset's authors publish for the `.gz`. The test split is the official one.
- the scikit-feature benchmark sets (`allaml`, `arcene`, `basehock`, `coil20`, `glioma`, `isolet`,
  `leukemia`, `lung_small`, `madelon`, `orl`, `orlraws10p`, `pcmac`, `prostate_ge`, `relathe`, `tox_171`):
  the MATLAB `.mat` files of the scikit-feature repository (jundongl/scikit-feature, `skfeature/data/`;
  Li et al., "Feature selection: a data perspective", ACM Computing Surveys 50(6), 2018, arXiv 1601.07996),
  read from `$SPARSEBENCH_DATA/scikit-feature/` or downloaded there, verified by the sha256 of the file
  before it is moved into place, read with `scipy.io.loadmat` (keys `X` samples x features, `Y` samples x 1).
  Labels 1..C (or -1/1 for arcene, madelon, leukemia) become 0..C-1 in sorted order. They have no official
  test split: a stratified 1/3 test holdout drawn with `data.split_seed` (2/3 train, 1/3 test as in the
  authors' 2019 SET-MLP code, wiegerw/SET-MLP-ONE-MILLION-NEURONS set_mlp_sparse_data_structures.py, whose
  split is a plain shuffle; stratified here so that every class with >= 3 samples reaches the test set).
  Features are standardised per feature with the *training* statistics, (x - mean) / (std + 1e-4), as in
  that same file; the statistics come from the samples actually trained on (after the validation split
  and `max_train`), never from validation or test samples.

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

import functools
import gzip
import hashlib
import io
import os
import shutil
import struct
import tempfile
import urllib.request
from dataclasses import dataclass
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
    sha256_raw: str | None = None  # sha256 of the content: the decompressed bytes, or the file itself if not compressed
    md5_gz: str | None = None      # md5 of the file as stored (the .gz), as published by the dataset's authors
    compressed: bool = True        # a gzip file whose decompressed bytes are the content; False: the file is the content


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
    """Return the content of `path` (decompressed if `spec.compressed`) if it matches the known checksum,
    else raise DatasetError."""
    blob = path.read_bytes()
    raw = blob
    if spec.compressed:
        try:
            raw = gzip.decompress(blob)
        except (OSError, EOFError) as e:
            raise DatasetError(f"{path}: not a valid gzip file ({e}); delete it to download it again") from None
    if spec.sha256_raw is not None:
        got = hashlib.sha256(raw).hexdigest()
        what = "content" if spec.compressed else "file"
        if got != spec.sha256_raw:
            raise DatasetError(f"{path}: checksum mismatch (sha256 of {what} {got[:16]}..., expected {spec.sha256_raw[:16]}...); "
                               f"delete it to download it again")
    elif spec.md5_gz is not None:
        got = hashlib.md5(blob).hexdigest()
        if got != spec.md5_gz:
            raise DatasetError(f"{path}: checksum mismatch (md5 {got}, expected {spec.md5_gz}); delete it to download it again")
    return raw


def _download(urls: tuple[str, ...], spec: RemoteFile, dest: Path) -> bytes:
    """Try each mirror; a file is moved under its real name only after it passed its checksum. Returns the
    verified content (so the caller does not read and hash it a second time)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for base in urls:
        tmp = Path(tempfile.mkstemp(dir=dest.parent, suffix=".part")[1])
        try:
            with urllib.request.urlopen(base + spec.filename, timeout=60) as r, open(tmp, "wb") as f:
                shutil.copyfileobj(r, f)
            raw = _verify(tmp, spec)  # a wrong page or a corrupt mirror falls through to the next URL
            os.replace(tmp, dest)  # atomic: a killed download never leaves a half file under the real name
            return raw
        except (OSError, DatasetError) as e:
            errors.append(f"{base}: {str(e).replace(str(tmp), 'download')}")
        finally:
            tmp.unlink(missing_ok=True)
    raise DatasetError(f"{spec.filename}: download failed from every source ({'; '.join(errors)}); "
                       f"put the file in {dest.parent} or set SPARSEBENCH_DATA")


def _origin(urls: tuple[str, ...], spec: RemoteFile) -> str:
    """Where a file can be had, for error messages: its URLs in the order they are tried."""
    return " or ".join(base + spec.filename for base in urls)


def fetch_file(folder: Path, urls: tuple[str, ...], spec: RemoteFile, download: bool = True) -> bytes:
    """The verified content of `folder/spec.filename`, downloaded from `urls` (tried in order) when missing."""
    path = folder / spec.filename
    origin = _origin(urls, spec)
    if not path.exists():
        if not download:
            raise DatasetError(f"{path}: missing (downloads are off)" + (f"; get it from {origin}" if origin else ""))
        return _download(urls, spec, path)
    try:
        return _verify(path, spec)
    except DatasetError as e:  # a damaged copy: say where a good one comes from
        if not origin:
            raise
        raise DatasetError(f"{e} from {origin}") from None


@dataclass(frozen=True)
class FileSource:
    """The files of one dataset that are read whole (text tables, an archive), each verified by its checksum."""
    folder: str  # under the data root; may have several parts ("uci/mushroom")
    urls: tuple[str, ...]  # base URLs, tried in order
    files: dict[str, RemoteFile]  # role (data, train, test, archive) -> file
    citation: str


def fetch_source(source: FileSource, role: str, root: Path | None = None, download: bool = True) -> tuple[bytes, str]:
    """(verified content, path for messages) of the file `role` of `source`, downloaded into `root/<folder>/` when missing."""
    folder = (root or data_root()) / source.folder
    spec = source.files[role]
    return fetch_file(folder, source.urls, spec, download), str(folder / spec.filename)


def fetch_idx(source: IdxSource, root: Path | None = None, download: bool = True) -> dict[str, np.ndarray]:
    """The four arrays of an IDX dataset, verified; downloaded into `root/<folder>/` when missing."""
    folder = (root or data_root()) / source.folder
    return {role: parse_idx(fetch_file(folder, source.urls, spec, download), str(folder / spec.filename))
            for role, spec in source.files.items()}


# --------------------------------------------------------------------------------------------------
# MATLAB .mat files of the scikit-feature repository (https://github.com/jundongl/scikit-feature)
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MatSource:
    folder: str
    urls: tuple[str, ...]  # base URLs, tried in order
    files: dict[str, RemoteFile]  # dataset name -> file (uncompressed, sha256 of the file)
    citation: str


def _mat_file(filename: str, sha256: str) -> RemoteFile:
    return RemoteFile(filename, sha256_raw=sha256, compressed=False)


# sha256 of the files from shared/datasets/README.md ("Checksums"). Samples x features (classes):
# ALLAML 72x7129 (2), arcene 200x10000 (2), BASEHOCK 1993x4862 (2), COIL20 1440x1024 (20), GLIOMA 50x4434 (4),
# Isolet 1560x617 (26), leukemia 72x7070 (2), lung_small 73x325 (7), madelon 2600x500 (2), ORL 400x1024 (40),
# orlraws10P 100x10304 (10), PCMAC 1943x3289 (2), Prostate-GE 102x5966 (2), RELATHE 1427x4322 (2),
# TOX-171 171x5748 (4). `lung_small` is not the 203x3312 `lung` of the SET papers; `leukemia` is
# scikit-feature's discretised (-2..2) version.
SCIKIT_FEATURE = MatSource(
    folder="scikit-feature",
    urls=("https://github.com/jundongl/scikit-feature/raw/master/skfeature/data/",
          "https://raw.githubusercontent.com/jundongl/scikit-feature/master/skfeature/data/"),
    files={Path(f.filename).stem.lower().replace("-", "_"): f for f in (
        _mat_file("ALLAML.mat", "068afe0fe1021932e1e7d801294c267de8aeaa9d41899acfac024e72b0d44c1e"),
        _mat_file("arcene.mat", "779d678207b9a8c0ba8f2f5ecdb2216d9f98bf475ab040e806797efd36331bc5"),
        _mat_file("BASEHOCK.mat", "e0452e0f3c0fefdc5cb6352165e4ba4a25c3a2a7b5a5b4d44e103742d6317aa0"),
        _mat_file("COIL20.mat", "4595ebdda07f47b0eb014fcfaddc22b452f9aed9c1d9261a0d5bc336c1ee1344"),
        _mat_file("GLIOMA.mat", "c31cd32edd770c7a102729839e670e588bc959a591e0eae5a0676c9ca11d4c4f"),
        _mat_file("Isolet.mat", "ea73c69b1342a7def8199458e53a70307a83d557eceb2579863dda57c3ccd2b1"),
        _mat_file("leukemia.mat", "eb92382fb77c968864cb0a92a2c77acde7f88ba7fe5fd5a64b98184e3a05269d"),
        _mat_file("lung_small.mat", "93c6a65eb1f6f9f95ac897010c337254a57c57e7f8c0c9a7963a0e03de8233f4"),
        _mat_file("madelon.mat", "7dc9c9ff8d902651948e2df7f9cb6ed38c5d91e4c4159914cecb1ddbc7def12c"),
        _mat_file("ORL.mat", "e257ec36002e48688ed7f3b9fda13f479f2fd98864fa0672d1353eda1912b189"),
        _mat_file("orlraws10P.mat", "6ffa58759c5636f4ce311d23e44ef8de9f39bbb844902154c0cc5daac71226d6"),
        _mat_file("PCMAC.mat", "9999dfccf97ab88f87127dd3457da436acb75cda9f0af4750e7cae5fe1a31b25"),
        _mat_file("Prostate-GE.mat", "050b598534dbc662f23e30f39b41354b61d02ab8567837bcf9b1091c1c636ab4"),
        _mat_file("RELATHE.mat", "1091fe26c721aa69ddc5ce3ebcef54e03565809cae07e1769cef45ad23ab28d0"),
        _mat_file("TOX-171.mat", "f52f57e61775b7830c84750456d7fadfd220d1cc8eed26419c3390eb9216cc84"),
    )},
    citation="Li et al.: Feature selection: a data perspective, ACM Computing Surveys 50(6) 2018 (arXiv 1601.07996); "
             "scikit-feature repository, skfeature/data",
)


def _one_line(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())


def parse_mat(raw: bytes, name: str = "<bytes>") -> tuple[np.ndarray, np.ndarray]:
    """`X` (samples x features) as float32 and `Y` (samples x 1) as int64 labels 0..C-1, in the sorted
    order of the label values (1..C -> 0..C-1, -1/1 -> 0/1)."""
    import scipy.io
    import scipy.sparse

    try:
        mat = scipy.io.loadmat(io.BytesIO(raw))
    except Exception as e:  # scipy raises ValueError, TypeError, OSError, zlib.error, ... on a damaged file
        raise DatasetError(f"{name}: not a readable MATLAB file ({_one_line(e)}); delete it to download it again") from None
    missing = [k for k in ("X", "Y") if k not in mat]
    if missing:
        found = ", ".join(k for k in mat if not k.startswith("__")) or "none"
        raise DatasetError(f"{name}: no variable {missing[0]!r} in the MATLAB file (variables: {found})")
    x, y = mat["X"], mat["Y"]
    x = x.toarray() if scipy.sparse.issparse(x) else np.asarray(x)
    y = (y.toarray() if scipy.sparse.issparse(y) else np.asarray(y)).ravel()
    if x.ndim != 2 or x.dtype.kind not in "biuf" or y.dtype.kind not in "biuf":
        raise DatasetError(f"{name}: X must be a numeric samples x features matrix and Y numeric labels "
                           f"(got X {x.dtype} {x.shape}, Y {y.dtype})")
    if len(x) != len(y):
        raise DatasetError(f"{name}: X has {len(x)} samples but Y has {len(y)} labels")
    if not np.isfinite(x).all():
        raise DatasetError(f"{name}: X contains NaN or infinite values")
    values, labels = np.unique(y, return_inverse=True)
    if not np.array_equal(values, np.round(values)):
        raise DatasetError(f"{name}: labels are not integers ({values[:5].tolist()}...)")
    return x.astype(np.float32), labels.astype(np.int64)


def fetch_mat(source: MatSource, name: str, root: Path | None = None, download: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of the dataset `name` of `source`, verified; downloaded into `root/<folder>/` when missing."""
    folder = (root or data_root()) / source.folder
    spec = source.files[name]
    return parse_mat(fetch_file(folder, source.urls, spec, download), str(folder / spec.filename))


def stratified_holdout(x: np.ndarray, y: np.ndarray, seed: int, name: str = "<data>"):
    """(x_train, y_train, x_test, y_test): 2/3 train (int(n * 2 / 3) samples, as the authors' code takes) and
    1/3 test, stratified by label, drawn with `seed`."""
    from sklearn.model_selection import train_test_split

    n_train = int(len(y) * 2 / 3)
    try:
        x_tr, x_te, y_tr, y_te = train_test_split(x, y, train_size=n_train, test_size=len(y) - n_train,
                                                  random_state=seed, stratify=y)
    except ValueError as e:  # e.g. a class with a single sample cannot be stratified
        raise DatasetError(f"{name}: cannot draw a stratified 1/3 test holdout ({_one_line(e)})") from None
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


def _arrays_checksum(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(str(a.shape).encode() + str(a.dtype).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------
# Dataset registry: name -> loader(root, split_seed) returning (x_train, y_train, x_test, y_test, source) as
# numpy arrays (features float32 shaped (N, ...), labels int64 0..C-1) and a provenance string
# --------------------------------------------------------------------------------------------------
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


def _fixed_holdout(x: np.ndarray, y: np.ndarray):
    """(x_train, y_train, x_test, y_test): the scikit-learn bundled sets have no official split, so a fixed
    stratified 25% test holdout (random_state 0), the same for every config (split_seed unused)."""
    from sklearn.model_selection import train_test_split

    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    return x_tr, y_tr, x_te, y_te


@register_dataset("digits")
def _digits(root: Path | None, split_seed: int):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)  # pixel values are 0..16
    y = d.target.astype(np.int64)
    return (*_fixed_holdout(x, y), "scikit-learn load_digits (UCI optdigits test part); fixed stratified 25% test holdout")


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


def _scikit_feature(name: str, root: Path | None, split_seed: int):
    source = SCIKIT_FEATURE  # looked up per call, so tests can point it at files they write
    x, y = fetch_mat(source, name, root)
    x_tr, y_tr, x_te, y_te = stratified_holdout(x, y, split_seed, name)
    return x_tr, y_tr, x_te, y_te, (f"{source.files[name].filename} from {source.citation}; "
                                    f"stratified 1/3 test holdout by data.split_seed")


for _name in SCIKIT_FEATURE.files:
    register_dataset(_name, family="scikit-feature", standardize=True)(functools.partial(_scikit_feature, _name))
del _name


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
    return (*_fixed_holdout(x, y), f"scikit-learn {loader} ({origin}); fixed stratified 25% test holdout")


for _name in SKLEARN_TABULAR:
    register_dataset(_name, family="sklearn", standardize=True)(functools.partial(_sklearn_tabular, _name))
del _name


_MAX_TEST_STREAM = 1  # max_test draws from SeedSequence([split_seed, 1]): independent of the val permutation


def _val_split(y: np.ndarray, n_val: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
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


def load_dataset(cfg: DataConfig, device: torch.device | str = "cpu", root: Path | None = None) -> Dataset:
    """Load, split (train/val by `cfg.split_seed`), subset (max_train, max_test), standardise where the
    dataset asks for it (training statistics only) and move to `device`."""
    check_dataset_name(cfg.dataset)
    entry = _REGISTRY[cfg.dataset]
    x_tr, y_tr, x_te, y_te, source = entry.loader(root, cfg.split_seed)
    if len(x_tr) != len(y_tr) or len(x_te) != len(y_te):
        raise DatasetError(f"{cfg.dataset}: images and labels differ in count ({len(x_tr)} vs {len(y_tr)}, {len(x_te)} vs {len(y_te)})")
    checksum = _arrays_checksum(x_tr, y_tr, x_te, y_te)
    num_classes = int(max(y_tr.max(), y_te.max())) + 1
    n_val = max(1, int(round(cfg.val_fraction * len(x_tr))))
    if n_val >= len(x_tr):
        raise DatasetError(f"{cfg.dataset}: data.val_fraction={cfg.val_fraction} leaves no training samples out of {len(x_tr)}")
    train_idx, val_idx = _val_split(y_tr, n_val, cfg.split_seed)
    if cfg.max_train:
        train_idx = train_idx[: cfg.max_train]
    if cfg.max_test and cfg.max_test < len(x_te):
        # a random subset by split_seed, kept in the official order; a prefix of one permutation, so nested
        keep = np.sort(np.random.default_rng([cfg.split_seed, _MAX_TEST_STREAM]).permutation(len(x_te))[: cfg.max_test])
        x_te, y_te = x_te[keep], y_te[keep]
    x_train, x_val = x_tr[train_idx], x_tr[val_idx]
    if entry.standardize:
        x_train, x_val, x_te = standardize(x_train, x_val, x_te)
        source += f"; standardised per feature with the training samples' mean and std, (x - mean) / (std + {STANDARDIZE_EPS:g})"
    t = torch.from_numpy
    ds = Dataset(t(np.ascontiguousarray(x_train)), t(y_tr[train_idx]), t(np.ascontiguousarray(x_val)),
                 t(y_tr[val_idx]), t(np.ascontiguousarray(x_te)), t(np.ascontiguousarray(y_te)),
                 DataInfo(cfg.dataset, tuple(x_tr.shape[1:]), num_classes, len(train_idx), n_val, len(x_te), checksum, source))
    return ds.to(device)


# Loaders in modules of their own register on import; imported last because they use the helpers above.
from . import data_cifar, data_tiny_imagenet, data_uci  # noqa: E402

LOADER_MODULES = (data_cifar, data_tiny_imagenet, data_uci)
