"""The user's own data (methods/data/files.py): every format on files the tests write, the encoding and
standardisation with training statistics, the stratified holdout or a given test file, the digest, and one
one-line error naming the file for every bad input."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.io

from sparsebench.methods import DataConfig, DatasetError, load_dataset
from sparsebench.methods.data.files import file_digest, load_file


def _frame(n: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    return pd.DataFrame({"a": rng.normal(size=n) + y, "b": rng.normal(size=n) * 5 + 10,
                         "colour": np.array(["red", "green", "blue"])[rng.integers(0, 3, n)],
                         "label": np.array(["x", "y", "z"])[y]})


def _load(path, **kw) -> "object":
    return load_dataset(DataConfig(dataset=str(path), **kw))


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet"])
def test_tables_one_hot_holdout_and_training_statistics(tmp_path, suffix):
    df = _frame()
    path = tmp_path / f"t{suffix}"
    {".csv": lambda: df.to_csv(path, index=False), ".tsv": lambda: df.to_csv(path, sep="\t", index=False),
     ".parquet": lambda: df.to_parquet(path)}[suffix]()
    ds = _load(path, val_fraction=0.1)
    i = ds.info
    n_pool = int(60 * 2 / 3)
    # 2 numeric + 3 one-hot colour columns; the last column is the target by default, labels x, y, z -> 0, 1, 2
    assert (i.in_features, i.num_classes, i.n_test, i.n_train + i.n_val) == (5, 3, 60 - n_pool, n_pool)
    assert i.name == path.name and "user file" in i.source
    assert np.bincount(ds.y_test.numpy()).tolist() == [7, 7, 6]  # stratified holdout
    x_tr = ds.x_train.double().numpy()
    assert np.abs(x_tr.mean(0)).max() < 1e-5 and np.abs(x_tr.std(0) - 1).max() < 1e-3  # training statistics
    assert np.abs(ds.x_test.double().numpy().mean(0)).max() > 1e-3  # not the test split's own statistics


def test_target_option_and_missing_values(tmp_path):
    df = _frame()
    df = df[["label", "a", "colour", "b"]]  # target first: --target label
    df.loc[[0, 1, 2], "a"] = np.nan   # numeric: training-split mean
    df.loc[[3, 4], "colour"] = None   # categorical: a category of its own
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False)
    x_tr, y_tr, x_te, y_te, _, standardize = load_file(str(path), target="label")
    assert x_tr.shape[1] == 2 + 4 and standardize and np.isfinite(x_tr).all() and np.isfinite(x_te).all()
    assert sorted(set(y_tr.tolist())) == [0, 1, 2]


def test_npz_mat_and_a_given_test_file(tmp_path):
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(40, 6)), np.repeat([3, 7], 20)
    np.savez(tmp_path / "a.npz", X=x, y=y)
    scipy.io.savemat(tmp_path / "a.mat", {"X": x, "Y": y[:, None]})
    a, m = _load(tmp_path / "a.npz"), _load(tmp_path / "a.mat")
    assert a.info.checksum == m.info.checksum and a.info.in_features == 6 and a.info.num_classes == 2
    np.savez(tmp_path / "test.npz", X=rng.normal(size=(10, 6)), y=np.repeat([3, 7], 5))
    t = _load(tmp_path / "a.npz", test_dataset=str(tmp_path / "test.npz"))
    assert (t.info.n_test, t.info.n_train + t.info.n_val) == (10, 40)


def test_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(2)
    for c in ("cat", "dog"):
        (tmp_path / "img" / c).mkdir(parents=True)
        for k in range(4):
            Image.fromarray(rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)).save(tmp_path / "img" / c / f"{k}.png")
    (tmp_path / "img" / "dog" / "4.jpg").write_bytes((tmp_path / "img" / "dog" / "0.png").read_bytes())  # PNG content, .jpg name: Pillow reads it
    ds = _load(tmp_path / "img")
    assert ds.info.input_shape == (3, 5, 7) and ds.info.num_classes == 2
    x = ds.x_train.numpy()
    assert x.min() >= 0 and x.max() <= 1  # not standardised
    assert ds.info.n_train + ds.info.n_val + ds.info.n_test == 9


def test_digest_is_the_content_not_the_place(tmp_path):
    df = _frame()
    (tmp_path / "x").mkdir()
    df.to_csv(tmp_path / "a.csv", index=False)
    df.to_csv(tmp_path / "x" / "b.csv", index=False)
    assert file_digest(tmp_path / "a.csv") == file_digest(tmp_path / "x" / "b.csv")
    df.iloc[:-1].to_csv(tmp_path / "x" / "b.csv", index=False)
    assert file_digest(tmp_path / "a.csv") != file_digest(tmp_path / "x" / "b.csv")


def _write(tmp_path, case):
    """(path, kwargs of DataConfig, expected message) of one bad input."""
    p = tmp_path
    rng = np.random.default_rng(0)
    if case == "missing":
        return p / "nope.csv", {}, "no such file or folder"
    if case == "unknown format":
        (p / "a.xlsx").write_text("x")
        return p / "a.xlsx", {}, "unknown format '.xlsx'"
    if case == "unreadable csv":
        (p / "a.csv").write_bytes(b"a,b\n1,2\n\xff\xfe,3,4,5\n")
        return p / "a.csv", {}, "not a readable CSV file"
    if case == "unreadable parquet":
        (p / "a.parquet").write_text("not parquet")
        return p / "a.parquet", {}, "not a readable Parquet file"
    if case == "unreadable npz":
        (p / "a.npz").write_text("not a zip")
        return p / "a.npz", {}, "not a readable NPZ file"
    if case == "unreadable mat":
        (p / "a.mat").write_text("not a mat")
        return p / "a.mat", {}, "not a readable MATLAB file"
    if case == "target absent":
        _frame().to_csv(p / "a.csv", index=False)
        return p / "a.csv", {"target": "klass"}, "no target column 'klass' (columns: a, b, colour, label)"
    if case == "single class":
        _frame().assign(label="x").to_csv(p / "a.csv", index=False)
        return p / "a.csv", {}, "a single class ('x')"
    if case == "inf in table":
        _frame().assign(b=np.inf).to_csv(p / "a.csv", index=False)
        return p / "a.csv", {}, "column 'b' holds infinite values"
    if case == "nan in arrays":
        x = rng.normal(size=(30, 3))
        x[4, 1] = np.nan
        np.savez(p / "a.npz", X=x, y=np.arange(30) % 2)
        return p / "a.npz", {}, "X contains NaN or infinite values"
    if case == "length mismatch":
        np.savez(p / "a.npz", X=rng.normal(size=(30, 3)), y=np.arange(29) % 2)
        return p / "a.npz", {}, "X has 30 samples but y has 29 labels"
    if case == "mat length mismatch":
        scipy.io.savemat(p / "a.mat", {"X": rng.normal(size=(30, 3)), "Y": (np.arange(31) % 2)[:, None]})
        return p / "a.mat", {}, "X has 30 samples but Y has 31 labels"
    if case == "too few of a class":
        np.savez(p / "a.npz", X=rng.normal(size=(30, 3)), y=np.r_[np.zeros(29), 1])
        return p / "a.npz", {}, "class 1.0 has 1 sample; the stratified test holdout needs at least 2"
    if case == "no images":
        (p / "img" / "cat").mkdir(parents=True)
        (p / "img" / "cat" / "notes.txt").write_text("x")
        return p / "img", {}, "no PNG or JPEG images"
    if case == "broken image":
        (p / "img" / "cat").mkdir(parents=True)
        (p / "img" / "cat" / "a.png").write_bytes(b"\x89PNG broken")
        return p / "img" / "cat" / "a.png", {}, "not a readable image"
    if case == "target for arrays":
        np.savez(p / "a.npz", X=rng.normal(size=(30, 3)), y=np.arange(30) % 2)
        return p / "a.npz", {"target": "y"}, "data.target='y' names a table column"
    if case == "unseen test label":
        np.savez(p / "a.npz", X=rng.normal(size=(30, 3)), y=np.arange(30) % 2)
        np.savez(p / "t.npz", X=rng.normal(size=(6, 3)), y=np.arange(6) % 3)
        return p / "a.npz", {"test_dataset": str(p / "t.npz")}, "label 2 does not occur in the training file"
    raise AssertionError(case)


BAD = ["missing", "unknown format", "unreadable csv", "unreadable parquet", "unreadable npz", "unreadable mat",
       "target absent", "single class", "inf in table", "nan in arrays", "length mismatch", "mat length mismatch",
       "too few of a class", "no images", "broken image", "target for arrays", "unseen test label"]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_naming_the_file(tmp_path, case):
    path, kw, message = _write(tmp_path, case)
    dataset = str(tmp_path / "img") if case == "broken image" else str(path)
    with pytest.raises(DatasetError) as e:
        load_dataset(DataConfig(dataset=dataset, **kw))
    text = str(e.value)
    assert "\n" not in text and message in text, text
    assert text.startswith(str(path if case != "unseen test label" else tmp_path / "t.npz")), text


def test_unknown_name_and_file_options_on_a_built_in_set():
    with pytest.raises(DatasetError, match=r"unknown dataset 'mnsit'; available: .*digits.*, or a file \(.csv"):
        load_dataset(DataConfig(dataset="mnsit"))
    with pytest.raises(DatasetError, match=r"unknown dataset ''; available"):
        load_dataset(DataConfig(dataset=""))
    with pytest.raises(DatasetError, match=r"data.target='x' is for a dataset given as a file; 'digits' is a built-in"):
        load_dataset(DataConfig(dataset="digits", target="x"))


def test_a_scikit_feature_file_given_as_a_path_is_the_built_in_set(shared_datasets, monkeypatch, tmp_path):
    """The same .mat read as a user file and as the registered set: the same arrays and split (one holdout rule)."""
    monkeypatch.setenv("SPARSEBENCH_DATA", str(shared_datasets))
    copy = tmp_path / "my_lung.mat"
    copy.write_bytes((shared_datasets / "scikit-feature" / "lung_small.mat").read_bytes())
    a, b = load_dataset(DataConfig(dataset=str(copy))), load_dataset(DataConfig(dataset="lung_small"))
    assert a.info.checksum == b.info.checksum and a.info.name == "my_lung.mat"
    assert all(bool((getattr(a, k) == getattr(b, k)).all()) for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"))


def test_a_file_larger_than_the_free_memory_is_refused(tmp_path, monkeypatch):
    import sparsebench.methods.data.files as files

    _frame().to_csv(tmp_path / "big.csv", index=False)
    assert files.available_memory() > 0
    monkeypatch.setattr(files, "available_memory", lambda: 100)  # bytes: less than the file
    with pytest.raises(DatasetError, match=r"big.csv: the file \([0-9.]+ MiB\) is larger than the free memory \(0.0 MiB\)"):
        load_dataset(DataConfig(dataset=str(tmp_path / "big.csv")))
