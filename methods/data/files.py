"""The user's own data: a file or an image folder given as `data.dataset` (a path instead of a registered name).

One reader per format, chosen by the file's suffix (`READERS`); a new format is one function here plus its tests.
Each reader returns the features (a pandas DataFrame for tables, a numpy array otherwise) and the raw labels:

- `.csv`, `.tsv`, `.parquet`: a table with a header row; the label is the column `data.target`, by default the
  LAST column (scikit-learn's `fetch_openml`/`load_*` frames and most exported tables put the target last).
- `.npz`: arrays `X` (samples x ...) and `y` (samples).
- `.mat`: the scikit-feature layout, `X` (samples x features) and `Y` (samples x 1) (sources/mat.py `parse_mat`).
- a folder: one subfolder per class holding PNG / JPEG images, decoded with Pillow to float32 (C, H, W) in [0, 1]
  (C = 3 if any image has colour, else 1; every image must have the same size).

Labels become 0..C-1 in the sorted order of the training split's label values. The test split is the file
`data.test_dataset` when given, else a stratified 1/3 holdout by `data.split_seed` (splits.stratified_holdout), as
for the built-in sets without an official split.

Tables: a column that is not numeric (strings, booleans, categoricals) is one-hot encoded, one 0/1 column per value
seen in the TRAINING split (sorted); a value seen only in the test split gets all zeros. Missing values: an empty
cell of a categorical column is a category of its own (as the built-in mushroom set treats its `?`); an empty cell
of a numeric column is replaced by that column's mean over the training split (so it is 0 after standardisation).
Infinite values, a numeric column empty over the whole training split, and a missing label are errors. Arrays
(`.npz`, `.mat`) and images admit no missing value: NaN or inf is an error. Tables and arrays are then standardised
by load_dataset with the training statistics only (splits.standardize); images stay in [0, 1].
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .splits import stratified_holdout
from .types import DatasetError, one_line

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _read_table(path: Path, target: str, kind: str, read: Callable[[Path], Any]):
    try:
        df = read(path)
    except Exception as e:  # pandas/pyarrow raise ParserError, UnicodeDecodeError, ArrowInvalid, OSError, ...
        raise DatasetError(f"{path}: not a readable {kind} file ({one_line(e)})") from None
    if df.shape[1] < 2 or len(df) == 0:
        raise DatasetError(f"{path}: the {kind} table has {len(df)} rows and {df.shape[1]} columns; "
                           f"it needs a header, at least one feature column and the target column")
    columns = [str(c) for c in df.columns]
    df.columns = columns
    target = target or columns[-1]
    if target not in columns:
        raise DatasetError(f"{path}: no target column {target!r} (columns: {', '.join(columns)})")
    y = df[target]
    if y.isna().any():
        raise DatasetError(f"{path}: the target column {target!r} has {int(y.isna().sum())} missing values")
    return df.drop(columns=[target]), y.to_numpy()


def read_csv(path: Path, target: str = ""):
    import pandas as pd

    return _read_table(path, target, "CSV", lambda p: pd.read_csv(p, sep=","))


def read_tsv(path: Path, target: str = ""):
    import pandas as pd

    return _read_table(path, target, "TSV", lambda p: pd.read_csv(p, sep="\t"))


def read_parquet(path: Path, target: str = ""):
    import pandas as pd

    return _read_table(path, target, "Parquet", pd.read_parquet)


def _no_target(path: Path, target: str) -> None:
    if target:
        raise DatasetError(f"{path}: data.target={target!r} names a table column; this format holds its labels itself")


def read_npz(path: Path, target: str = ""):
    _no_target(path, target)
    try:
        with np.load(path, allow_pickle=False) as z:  # no pickled objects from a user's file
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # zipfile.BadZipFile, ValueError (object arrays), OSError
        raise DatasetError(f"{path}: not a readable NPZ file ({one_line(e)})") from None
    for k in ("X", "y"):
        if k not in arrays:
            raise DatasetError(f"{path}: no array {k!r} in the NPZ file (arrays: {', '.join(arrays) or 'none'})")
    x, y = arrays["X"], arrays["y"].reshape(-1) if arrays["y"].ndim == 2 and 1 in arrays["y"].shape else arrays["y"]
    if x.ndim < 2 or x.dtype.kind not in "biuf":
        raise DatasetError(f"{path}: X must be a numeric array of samples x features (got {x.dtype} {x.shape})")
    if y.ndim != 1:
        raise DatasetError(f"{path}: y must hold one label per sample (got shape {y.shape})")
    return x, y


def read_mat(path: Path, target: str = ""):
    from .sources.mat import parse_mat

    _no_target(path, target)
    return parse_mat(_read_bytes(path), str(path), hint="")


def read_image_folder(path: Path, target: str = ""):
    _no_target(path, target)
    try:
        from PIL import Image
    except ImportError:
        raise DatasetError(f"{path}: reading an image folder needs Pillow (pip install pillow)") from None
    files = image_files(path)
    if not files:
        raise DatasetError(f"{path}: no PNG or JPEG images in one subfolder per class (suffixes {', '.join(IMAGE_SUFFIXES)})")
    images, labels = [], []
    for f in files:
        try:
            with Image.open(f) as im:
                im.load()
                colour = im.mode not in ("1", "L", "I", "I;16", "F")
                images.append(np.asarray(im.convert("RGB" if colour else "L"), dtype=np.uint8))
        except Exception as e:  # PIL.UnidentifiedImageError, OSError on a truncated file
            raise DatasetError(f"{f}: not a readable image ({one_line(e)})") from None
        labels.append(f.parent.name)
    (h, w), odd = images[0].shape[:2], [i for i, im in enumerate(images) if im.shape[:2] != images[0].shape[:2]]
    if odd:
        oh, ow = images[odd[0]].shape[:2]
        raise DatasetError(f"{files[odd[0]]}: image of {ow}x{oh} pixels, but {files[0].name} has {w}x{h}; "
                           f"every image of the folder must have the same size")
    channels = 3 if any(im.ndim == 3 for im in images) else 1
    x = np.stack([np.repeat(im[..., None], 3, -1) if (channels == 3 and im.ndim == 2) else
                  (im[..., None] if im.ndim == 2 else im) for im in images])
    return (x.transpose(0, 3, 1, 2).astype(np.float32) / 255.0), np.array(labels)


def image_files(folder: Path) -> list[Path]:
    """The images of an image folder: files with an image suffix one level below `folder`, sorted."""
    return sorted(f for sub in folder.iterdir() if sub.is_dir() for f in sub.iterdir()
                  if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)


READERS: dict[str, Callable] = {".csv": read_csv, ".tsv": read_tsv, ".parquet": read_parquet, ".npz": read_npz,
                                ".mat": read_mat}


def looks_like_path(text: str) -> bool:
    """Whether `data.dataset` names a file or folder rather than a registered set."""
    if not text.strip():  # Path("") is the working directory: never read it as an image folder by accident
        return False
    return "/" in text or os.sep in text or Path(text).suffix.lower() in READERS or Path(text).exists()


def formats_help() -> str:
    return f"a file ({', '.join(READERS)}) or a folder of class subfolders of images"


def check_path(path: Path) -> None:
    """One line naming the file and the problem: missing, unknown format, larger than the free memory."""
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    if path.is_dir():
        return
    if path.suffix.lower() not in READERS:
        raise DatasetError(f"{path}: unknown format {path.suffix or '(no suffix)'!r}; allowed: {formats_help()}")
    size, free = path.stat().st_size, available_memory()
    if free is not None and size > free:
        raise DatasetError(f"{path}: the file ({size / 2**20:.1f} MiB) is larger than the free memory "
                           f"({free / 2**20:.1f} MiB); it is read whole")


def available_memory() -> int | None:
    """Bytes the system can give without swapping: Linux's MemAvailable (free memory plus reclaimable page cache),
    else the free pages; None where neither is known (then no check)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not on every platform
        return None


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise DatasetError(f"{path}: cannot be read ({one_line(e)})") from None


def read_any(path: Path, target: str = ""):
    """(features, raw labels) of a file or image folder."""
    check_path(path)
    if path.is_dir():
        x, y = read_image_folder(path, target)
    else:
        x, y = READERS[path.suffix.lower()](path, target)
    if len(x) != len(y):
        raise DatasetError(f"{path}: X has {len(x)} samples but y has {len(y)} labels")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise DatasetError(f"{path}: labels contain NaN or infinite values")
    return x, y


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes, or of an image folder (each image's class/name and the sha256 of its bytes, sorted):
    the content, not the place, identifies the data."""
    p = Path(path)
    if p.is_dir():
        h = hashlib.sha256()
        for f in image_files(p):
            h.update(f"{f.parent.name}/{f.name}\0{hashlib.sha256(_read_bytes(f)).hexdigest()}\n".encode())
        return h.hexdigest()
    h = hashlib.sha256()
    try:
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError as e:
        raise DatasetError(f"{p}: cannot be read ({one_line(e)})") from None
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------
# labels, holdout, encoding
# --------------------------------------------------------------------------------------------------
def _label_values(y: np.ndarray) -> np.ndarray:
    return y.astype(str) if y.dtype.kind in "OUSb" else y


def _encode_labels(y_tr: np.ndarray, y_te: np.ndarray, path: Path, test_path: Path | None):
    y_tr, y_te = _label_values(y_tr), _label_values(y_te)
    classes = np.unique(y_tr)
    if len(classes) < 2:
        raise DatasetError(f"{path}: a single class ({classes[0].item()!r}); classification needs at least 2")
    unseen = np.setdiff1d(np.unique(y_te), classes)
    if len(unseen):
        raise DatasetError(f"{test_path}: label {unseen[0].item()!r} does not occur in the training file {path}")
    return classes, np.searchsorted(classes, y_tr).astype(np.int64), np.searchsorted(classes, y_te).astype(np.int64)


def _holdout(y: np.ndarray, split_seed: int, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices) of the stratified 1/3 holdout; every class needs 2 samples (one per side)."""
    values, counts = np.unique(_label_values(y), return_counts=True)
    if len(values) < 2:
        raise DatasetError(f"{path}: a single class ({values[0].item()!r}); classification needs at least 2")
    if counts.min() < 2:
        c = values[counts.argmin()].item()
        raise DatasetError(f"{path}: class {c!r} has {counts.min()} sample; the stratified test holdout needs at "
                           f"least 2 per class (or give a test file with data.test_dataset)")
    idx = np.arange(len(y))
    tr, _, te, _ = stratified_holdout(idx, _label_values(y), split_seed, str(path))
    return tr, te


def _encode_table(train, test, path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Features of the train and test frames as float32 arrays: numeric columns (training-mean imputation),
    categorical columns one-hot over the training split's values (missing = a category of its own)."""
    import pandas as pd

    blocks_tr, blocks_te, names = [], [], []
    for col in train.columns:
        a, b = train[col], test[col]
        if pd.api.types.is_numeric_dtype(a) and not pd.api.types.is_bool_dtype(a):
            va, vb = a.to_numpy(dtype=np.float64), pd.to_numeric(b, errors="coerce").to_numpy(dtype=np.float64)
            if np.isinf(va).any() or np.isinf(vb).any():
                raise DatasetError(f"{path}: column {col!r} holds infinite values")
            if np.isnan(va).all():
                raise DatasetError(f"{path}: numeric column {col!r} has no value in the training split")
            mean = np.nanmean(va)
            blocks_tr.append(np.where(np.isnan(va), mean, va)[:, None])
            blocks_te.append(np.where(np.isnan(vb), mean, vb)[:, None])
            names.append(col)
        else:
            sa, sb = a.astype("string").fillna("<missing>"), b.astype("string").fillna("<missing>")
            cats = sorted(set(sa))
            blocks_tr.append((sa.to_numpy()[:, None] == np.array(cats)[None]).astype(np.float64))
            blocks_te.append((sb.to_numpy()[:, None] == np.array(cats)[None]).astype(np.float64))
            names += [f"{col}={c}" for c in cats]
    return np.hstack(blocks_tr).astype(np.float32), np.hstack(blocks_te).astype(np.float32), names


def _check_finite(x: np.ndarray, path: Path) -> np.ndarray:
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise DatasetError(f"{path}: X contains NaN or infinite values (not allowed in arrays; tables may leave "
                           f"numeric cells empty)")
    return x


def load_file(dataset: str, target: str = "", test_dataset: str = "", split_seed: int = 0):
    """(x_train, y_train, x_test, y_test, source, standardize) of a user's file or image folder."""
    import pandas as pd

    path = Path(dataset)
    x, y = read_any(path, target)
    test_path = Path(test_dataset) if test_dataset else None
    if test_path is not None:
        x_te, y_te = read_any(test_path, target)
        if type(x) is not type(x_te):
            raise DatasetError(f"{test_path}: a test file must be of the training file's kind (table, arrays or images)")
        split = f"test split {test_path.name}"
    else:
        tr, te = _holdout(y, split_seed, path)
        x, y, x_te, y_te = ((x.iloc[tr], y[tr], x.iloc[te], y[te]) if isinstance(x, pd.DataFrame)
                            else (x[tr], y[tr], x[te], y[te]))
        split = "stratified 1/3 test holdout by data.split_seed"
    classes, y_tr_codes, y_te_codes = _encode_labels(y, y_te, path, test_path)
    if isinstance(x, pd.DataFrame):
        missing = [c for c in x.columns if c not in x_te.columns]
        if missing:
            raise DatasetError(f"{test_path}: no column {missing[0]!r} of the training file")
        x_tr_a, x_te_a, names = _encode_table(x, x_te[list(x.columns)], path)
        kind = f"table, {len(names)} features after one-hot encoding"
    else:
        if x.shape[1:] != x_te.shape[1:]:
            raise DatasetError(f"{test_path}: samples of shape {x_te.shape[1:]}, the training file's are {x.shape[1:]}")
        x_tr_a, x_te_a = _check_finite(x, path), _check_finite(x_te, test_path or path)
        kind = "images (C, H, W) in [0, 1]" if path.is_dir() else "arrays"
    source = f"user file {path.name} ({kind}; {len(classes)} classes; {split})"
    return x_tr_a, y_tr_codes, x_te_a, y_te_codes, source, not path.is_dir()
