"""The three UCI sets of the Lp-sphere paper (arXiv 2103.16013; accuracy table of the authors' WilliamLiPro/LpSS
README: DNA, Mushroom, Climate), read from the canonical files under `$SPARSEBENCH_DATA/uci/<name>/` (or downloaded
there), each verified by the sha256 of the file before it is parsed (computed from the official files at the URLs
below).

- `mushroom`: UCI Mushroom, `agaricus-lepiota.data` (doi 10.24432/C5959T): 8124 rows of 23 one-letter codes,
  class first (e edible -> 0, p poisonous -> 1). The 22 categorical attributes are one-hot encoded in the order
  of `agaricus-lepiota.names` section 7, attribute by attribute and value by value as listed there, so the
  126 columns do not depend on which values occur (9 never do: they stay all-zero columns). The 2480 `?` of
  stalk-root (section 8) are a category of their own, the last of that attribute.
- `climate`: UCI Climate Model Simulation Crashes, `pop_failures.dat` (Lucas et al., Geosci. Model Dev. 6,
  2013; doi 10.24432/C5HG71): a header and 540 whitespace-separated rows, Study, Run, 18 parameters (scaled to
  [0, 1] in the file), outcome (0 failure -> 0, 1 success -> 1). Study and Run number the simulations and are
  dropped.
- `dna`: Statlog DNA (splice junctions, doi 10.24432/C5M888) in LIBSVM's format, `dna.scale` (2000 rows, CRLF
  line ends) and `dna.scale.t` (1186 rows, LF), 180 binary features, labels 1..3 -> 0..2. The test split is the
  official Statlog one (`dna.scale.t`).

The features are used as they are in the files (one-hot, binary, parameters in [0, 1]): the paper's UCI
preprocessing is unknown (the authors' repository holds no UCI code), so nothing is assumed.
Mushroom and Climate have no official test split and the authors give none: like the
scikit-feature sets they take a stratified 1/3 test holdout drawn with `data.split_seed`
(`methods/data/splits.py`).
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..fetch import FileSource, RemoteFile, fetch_source
from ..registry import register_dataset
from ..types import DatasetError, one_line
from ..splits import stratified_holdout

UCI_URL = "https://archive.ics.uci.edu/ml/machine-learning-databases/"
LIBSVM_MULTICLASS_URL = "https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/multiclass/"


def _text_file(filename: str, sha256: str) -> RemoteFile:
    return RemoteFile(filename, sha256_raw=sha256, compressed=False)


# sha256 of the files as published at UCI_URL and LIBSVM_MULTICLASS_URL.
MUSHROOM = FileSource(
    folder="uci/mushroom",
    urls=(UCI_URL + "mushroom/",),
    files={"data": _text_file("agaricus-lepiota.data", "e65d082030501a3ebcbcd7c9f7c71aa9d28fdfff463bf4cf4716a3fe13ac360e")},
    citation="UCI Mushroom (Schlimmer 1987), doi 10.24432/C5959T",
)
CLIMATE = FileSource(
    folder="uci/climate",
    urls=(UCI_URL + "00252/",),
    files={"data": _text_file("pop_failures.dat", "8a892cbb056072e84749aed7409d6f17c7b4a1c899fc98ce52dc2af8b727ff9c")},
    citation="UCI Climate Model Simulation Crashes (Lucas et al., Geosci. Model Dev. 6, 2013), doi 10.24432/C5HG71",
)
DNA = FileSource(
    folder="uci/dna",
    urls=(LIBSVM_MULTICLASS_URL,),
    files={"train": _text_file("dna.scale", "f74937ccb8908628058ae1819d4d46c960ce64383f622c994d4f2e6e21026494"),
           "test": _text_file("dna.scale.t", "d2eeed170e4e38ae2aba6aa4cd27a8ca4ecceb01a7751e8e509bb4e1a6bcef39")},
    citation="Statlog DNA (UCI splice-junction sequences, doi 10.24432/C5M888) in LIBSVM format (libsvmtools/datasets/multiclass)",
)


def _text(raw: bytes, name: str) -> list[tuple[int, str]]:
    """(line number, line) of the non-empty lines of an ASCII text file (LF or CRLF)."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as e:
        raise DatasetError(f"{name}: not an ASCII text file ({one_line(e)})") from None
    return [(i, line) for i, line in enumerate(text.splitlines(), 1) if line.strip()]


# --------------------------------------------------------------------------------------------------
# Mushroom
# --------------------------------------------------------------------------------------------------
# agaricus-lepiota.names section 7: (attribute, value codes in the order listed there). stalk-root's "missing=?"
# is listed there too, last.
MUSHROOM_CLASSES = "ep"  # edible, poisonous (section 7, "classes")
MUSHROOM_ATTRIBUTES = (
    ("cap-shape", "bcxfks"), ("cap-surface", "fgys"), ("cap-color", "nbcgrpuewy"), ("bruises?", "tf"),
    ("odor", "alcyfmnps"), ("gill-attachment", "adfn"), ("gill-spacing", "cwd"), ("gill-size", "bn"),
    ("gill-color", "knbhgropuewy"), ("stalk-shape", "et"), ("stalk-root", "bcuezr?"),
    ("stalk-surface-above-ring", "fyks"), ("stalk-surface-below-ring", "fyks"),
    ("stalk-color-above-ring", "nbcgopewy"), ("stalk-color-below-ring", "nbcgopewy"), ("veil-type", "pu"),
    ("veil-color", "nowy"), ("ring-number", "not"), ("ring-type", "ceflnpsz"), ("spore-print-color", "knbhrouwy"),
    ("population", "acnsvy"), ("habitat", "glmpuwd"),
)
MUSHROOM_FEATURES = tuple(f"{attr}={code}" for attr, codes in MUSHROOM_ATTRIBUTES for code in codes)  # 126 columns


def parse_mushroom(raw: bytes, name: str = "<bytes>") -> tuple[np.ndarray, np.ndarray]:
    """(one-hot features float32 (N, 126) in the order of MUSHROOM_FEATURES, labels int64: e 0, p 1)."""
    lines = _text(raw, name)
    if not lines:
        raise DatasetError(f"{name}: no data rows")
    ncols = 1 + len(MUSHROOM_ATTRIBUTES)
    rows = []
    for i, line in lines:
        fields = line.strip().split(",")
        if len(fields) != ncols:
            raise DatasetError(f"{name}: line {i}: {ncols} comma-separated values expected (class, 22 attributes), got {len(fields)}")
        rows.append(fields)
    table = np.array(rows)
    lineno = np.array([i for i, _ in lines])
    columns = []
    for j, (attr, codes) in enumerate((("class", MUSHROOM_CLASSES), *MUSHROOM_ATTRIBUTES)):
        hit = table[:, j, None] == np.array(list(codes))[None, :]
        bad = np.flatnonzero(~hit.any(axis=1))
        if len(bad):
            raise DatasetError(f"{name}: line {lineno[bad[0]]}: {attr} value {str(table[bad[0], j])!r} is not one of "
                               f"{', '.join(codes)} (agaricus-lepiota.names section 7)")
        columns.append(hit)
    y = columns[0].argmax(axis=1).astype(np.int64)
    return np.concatenate(columns[1:], axis=1).astype(np.float32), y


@register_dataset("mushroom", family="uci")
def _mushroom(root: Path | None, split_seed: int):
    source = MUSHROOM  # looked up per call, so tests can point it at files they write
    x, y = parse_mushroom(*fetch_source(source, "data", root))
    return (*stratified_holdout(x, y, split_seed, "mushroom"),
            f"{source.files['data'].filename} from {source.citation}; 22 attributes one-hot in the order of "
            f"agaricus-lepiota.names ('?' of stalk-root its own category), 126 columns; "
            f"stratified 1/3 test holdout by data.split_seed")


# --------------------------------------------------------------------------------------------------
# Climate Model Simulation Crashes
# --------------------------------------------------------------------------------------------------
CLIMATE_COLUMNS = ("Study", "Run", "vconst_corr", "vconst_2", "vconst_3", "vconst_4", "vconst_5", "vconst_7", "ah_corr",
                   "ah_bolus", "slm_corr", "efficiency_factor", "tidal_mix_max", "vertical_decay_scale", "convect_corr",
                   "bckgrnd_vdc1", "bckgrnd_vdc_ban", "bckgrnd_vdc_eq", "bckgrnd_vdc_psim", "Prandtl", "outcome")
CLIMATE_FEATURES = CLIMATE_COLUMNS[2:-1]  # the 18 parameters; Study and Run only number the simulations


def parse_climate(raw: bytes, name: str = "<bytes>") -> tuple[np.ndarray, np.ndarray]:
    """(the 18 parameters float32 (N, 18), outcome int64: 0 failure, 1 success)."""
    lines = _text(raw, name)
    if not lines:
        raise DatasetError(f"{name}: empty file (a header {' '.join(CLIMATE_COLUMNS[:3])} ... outcome and data rows expected)")
    header = lines[0][1].split()
    if tuple(header) != CLIMATE_COLUMNS:
        raise DatasetError(f"{name}: header {' '.join(CLIMATE_COLUMNS[:3])} ... outcome expected, got {' '.join(header[:4]) + ' ...'!r}")
    values = []
    for i, line in lines[1:]:
        fields = line.split()
        if len(fields) != len(CLIMATE_COLUMNS):
            raise DatasetError(f"{name}: line {i}: {len(CLIMATE_COLUMNS)} whitespace-separated values expected, got {len(fields)}")
        try:
            values.append([float(v) for v in fields])
        except ValueError as e:
            raise DatasetError(f"{name}: line {i}: not a number ({one_line(e)})") from None
    if not values:
        raise DatasetError(f"{name}: no data rows after the header")
    table = np.array(values)
    outcome = table[:, -1]
    bad = np.flatnonzero((outcome != 0) & (outcome != 1))
    if len(bad):
        raise DatasetError(f"{name}: line {lines[1 + bad[0]][0]}: outcome {outcome[bad[0]]:g} is not 0 (failure) or 1 (success)")
    return table[:, 2:-1].astype(np.float32), outcome.astype(np.int64)


@register_dataset("climate", family="uci")
def _climate(root: Path | None, split_seed: int):
    source = CLIMATE
    x, y = parse_climate(*fetch_source(source, "data", root))
    return (*stratified_holdout(x, y, split_seed, "climate"),
            f"{source.files['data'].filename} from {source.citation}; the 18 parameters (Study and Run dropped), "
            f"outcome 0 failure / 1 success; stratified 1/3 test holdout by data.split_seed")


# --------------------------------------------------------------------------------------------------
# DNA (LIBSVM format: "<label> <index>:<value> ..." per line, indices 1-based and increasing)
# --------------------------------------------------------------------------------------------------
DNA_FEATURES = 180
DNA_LABELS = (1, 2, 3)


def parse_libsvm(raw: bytes, name: str = "<bytes>", n_features: int = DNA_FEATURES,
                 labels: tuple[int, ...] = DNA_LABELS) -> tuple[np.ndarray, np.ndarray]:
    """(dense features float32 (N, n_features), labels int64 0..C-1 in the order of `labels`). LF or CRLF."""
    from sklearn.datasets import load_svmlight_file

    try:
        x, y = load_svmlight_file(io.BytesIO(raw), n_features=n_features, zero_based=False, dtype=np.float32)
    except ValueError as e:  # sklearn says what is wrong (index out of range, unsorted indices, not a number)
        raise DatasetError(f"{name}: not a LIBSVM file of {n_features} features ({one_line(e)})") from None
    if x.shape[0] == 0:
        raise DatasetError(f"{name}: no data rows")
    known = np.isin(y, labels)
    if not known.all():
        raise DatasetError(f"{name}: label {y[~known][0]:g} (row {np.flatnonzero(~known)[0] + 1}) is not one of "
                           f"{', '.join(map(str, labels))}")
    x = x.toarray()
    if not np.isin(x, (0.0, 1.0)).all():
        raise DatasetError(f"{name}: features must be binary (0/1); found the value {x[~np.isin(x, (0.0, 1.0))][0]:g}")
    return x, np.searchsorted(np.asarray(labels), y).astype(np.int64)


@register_dataset("dna", family="uci")
def _dna(root: Path | None, split_seed: int):
    source = DNA
    x_tr, y_tr = parse_libsvm(*fetch_source(source, "train", root))
    x_te, y_te = parse_libsvm(*fetch_source(source, "test", root))
    return (x_tr, y_tr, x_te, y_te,
            f"{source.files['train'].filename} / {source.files['test'].filename} from {source.citation}; "
            f"labels 1..3 -> 0..2; official Statlog train/test split")
