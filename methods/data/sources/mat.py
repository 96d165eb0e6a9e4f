"""The scikit-feature benchmark sets (`allaml`, `arcene`, `basehock`, `coil20`, `glioma`, `isolet`, `leukemia`,
`lung_small`, `madelon`, `orl`, `orlraws10p`, `pcmac`, `prostate_ge`, `relathe`, `tox_171`): the MATLAB `.mat` files
of the scikit-feature repository (jundongl/scikit-feature, `skfeature/data/`; Li et al., "Feature selection: a data
perspective", ACM Computing Surveys 50(6), 2018, arXiv 1601.07996), read from `$SPARSEBENCH_DATA/scikit-feature/` or
downloaded there, verified by the sha256 of the file before it is moved into place, read with `scipy.io.loadmat`
(keys `X` samples x features, `Y` samples x 1). Labels 1..C (or -1/1 for arcene, madelon, leukemia) become 0..C-1 in
sorted order. They have no official test split: a stratified 1/3 test holdout drawn with `data.split_seed` (2/3
train, 1/3 test as in the authors' 2019 SET-MLP code, wiegerw/SET-MLP-ONE-MILLION-NEURONS
set_mlp_sparse_data_structures.py, whose split is a plain shuffle; stratified here so that every class with >= 3
samples reaches the test set). Features are standardised per feature with the *training* statistics (load.py)."""
from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..fetch import RemoteFile, data_root, fetch_file
from ..registry import register_dataset
from ..splits import stratified_holdout
from ..types import DatasetError, one_line


@dataclass(frozen=True)
class MatSource:
    folder: str
    urls: tuple[str, ...]  # base URLs, tried in order
    files: dict[str, RemoteFile]  # dataset name -> file (uncompressed, sha256 of the file)
    citation: str


def _mat_file(filename: str, sha256: str) -> RemoteFile:
    return RemoteFile(filename, sha256_raw=sha256, compressed=False)


# sha256 of the files as published in jundongl/scikit-feature (URL below). Samples x features (classes):
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



def parse_mat(raw: bytes, name: str = "<bytes>", hint: str = "; delete it to download it again") -> tuple[np.ndarray, np.ndarray]:
    """`X` (samples x features) as float32 and `Y` (samples x 1) as int64 labels 0..C-1, in the sorted
    order of the label values (1..C -> 0..C-1, -1/1 -> 0/1)."""
    import scipy.io
    import scipy.sparse

    try:
        mat = scipy.io.loadmat(io.BytesIO(raw))
    except Exception as e:  # scipy raises ValueError, TypeError, OSError, zlib.error, ... on a damaged file
        raise DatasetError(f"{name}: not a readable MATLAB file ({one_line(e)}){hint}") from None
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


def _scikit_feature(name: str, root: Path | None, split_seed: int):
    source = SCIKIT_FEATURE  # looked up per call, so tests can point it at files they write
    x, y = fetch_mat(source, name, root)
    x_tr, y_tr, x_te, y_te = stratified_holdout(x, y, split_seed, name)
    return x_tr, y_tr, x_te, y_te, (f"{source.files[name].filename} from {source.citation}; "
                                    f"stratified 1/3 test holdout by data.split_seed")


for _name in SCIKIT_FEATURE.files:
    register_dataset(_name, family="scikit-feature", standardize=True)(functools.partial(_scikit_feature, _name))
del _name
