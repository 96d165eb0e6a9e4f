"""Dataset loading: IDX parsing on files the test writes, the real files when present, checksums, download."""
from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from sparsebench.methods import DataConfig, DatasetError, list_datasets, load_dataset
from sparsebench.methods.data import RemoteFile
from sparsebench.methods.data.sources.idx import MNIST, IdxSource, fetch_idx, parse_idx, write_idx


def make_idx_dataset(folder: Path, n_train=50, n_test=20, seed=0) -> IdxSource:
    """Small IDX .gz files in MNIST's format, and a source describing them with their real checksums."""
    rng = np.random.default_rng(seed)
    arrays = {"train_x": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "train_y": rng.integers(0, 10, n_train, dtype=np.uint8),
              "test_x": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "test_y": rng.integers(0, 10, n_test, dtype=np.uint8)}
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for role, a in arrays.items():
        name = MNIST.files[role].filename
        write_idx(a, folder / name)
        files[role] = RemoteFile(name, sha256_raw=hashlib.sha256(gzip.decompress((folder / name).read_bytes())).hexdigest())
    return IdxSource(folder=folder.name, urls=(), files=files, citation="test"), arrays


def test_idx_round_trip(tmp_path):
    source, arrays = make_idx_dataset(tmp_path / "tiny")
    got = fetch_idx(source, tmp_path, download=False)
    for role in arrays:
        np.testing.assert_array_equal(got[role], arrays[role])


def test_idx_header_errors():
    with pytest.raises(DatasetError, match="not an IDX file"):
        parse_idx(b"\x01\x02\x08\x01", "x")
    good = bytes([0, 0, 8, 1]) + (3).to_bytes(4, "big") + b"abc"
    assert parse_idx(good).tolist() == [97, 98, 99]
    with pytest.raises(DatasetError, match="size mismatch"):
        parse_idx(good[:-1], "short")


def test_corrupted_file_gives_checksum_error(tmp_path):
    source, _ = make_idx_dataset(tmp_path / "tiny")
    path = tmp_path / "tiny" / source.files["train_y"].filename
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[-1] ^= 0xFF  # one flipped label: still valid IDX, wrong content
    path.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DatasetError, match=r"checksum mismatch .*delete it to download it again"):
        fetch_idx(source, tmp_path, download=False)


def test_truncated_gzip_is_an_error_not_a_crash(tmp_path):
    source, _ = make_idx_dataset(tmp_path / "tiny")
    path = tmp_path / "tiny" / source.files["test_x"].filename
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DatasetError, match="not a valid gzip file"):
        fetch_idx(source, tmp_path, download=False)


def test_missing_file_without_download(tmp_path):
    source, _ = make_idx_dataset(tmp_path / "tiny")
    (tmp_path / "tiny" / source.files["test_y"].filename).unlink()
    with pytest.raises(DatasetError, match="missing"):
        fetch_idx(source, tmp_path, download=False)


def test_download_from_url_into_cache_then_verify(tmp_path):
    remote, arrays = make_idx_dataset(tmp_path / "remote" / "tiny")
    source = IdxSource(folder="tiny", urls=("file:///nonexistent/", (tmp_path / "remote" / "tiny").as_uri() + "/"),
                       files=remote.files, citation="test")
    cache = tmp_path / "cache"
    got = fetch_idx(source, cache)  # the first URL fails, the second serves
    assert sorted(p.name for p in (cache / "tiny").iterdir()) == sorted(f.filename for f in source.files.values())
    np.testing.assert_array_equal(got["test_x"], arrays["test_x"])


def test_download_failure_names_the_file(tmp_path):
    source, _ = make_idx_dataset(tmp_path / "remote" / "tiny")
    source = IdxSource(folder="tiny", urls=("file:///nonexistent/",), files=source.files, citation="test")
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte.gz: download failed"):
        fetch_idx(source, tmp_path / "cache")


def test_mnist_loader_via_sparsebench_data(tmp_path, monkeypatch):
    """The registered `mnist` loader reads $SPARSEBENCH_DATA/mnist; small test files fail MNIST's checksums."""
    make_idx_dataset(tmp_path / "mnist")
    monkeypatch.setenv("SPARSEBENCH_DATA", str(tmp_path))
    with pytest.raises(DatasetError, match="checksum mismatch"):
        load_dataset(DataConfig(dataset="mnist"))


def test_real_mnist_from_shared_datasets(shared_datasets, monkeypatch):
    monkeypatch.setenv("SPARSEBENCH_DATA", str(shared_datasets))
    ds = load_dataset(DataConfig(dataset="mnist", val_fraction=0.1))
    assert (ds.info.n_train, ds.info.n_val, ds.info.n_test) == (54000, 6000, 10000)
    assert ds.x_train.shape == (54000, 1, 28, 28) and ds.x_train.dtype == torch.float32
    assert 0.0 == ds.x_test.min() and ds.x_test.max() == 1.0
    assert torch.bincount(ds.y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]  # official test split


def test_fashion_mnist_labels_from_shared_datasets(shared_datasets):
    from sparsebench.methods.data.fetch import _verify
    from sparsebench.methods.data.sources.idx import FASHION_MNIST

    for role in ("train_y", "test_y"):
        spec = FASHION_MNIST.files[role]
        labels = parse_idx(_verify(shared_datasets / "fashion-mnist" / spec.filename, spec))
        assert np.bincount(labels).tolist() == [len(labels) // 10] * 10  # Fashion-MNIST is balanced


def test_digits_split_is_fixed_by_split_seed():
    a = load_dataset(DataConfig())
    b = load_dataset(DataConfig())
    c = load_dataset(DataConfig(split_seed=1))
    assert torch.equal(a.x_val, b.x_val) and not torch.equal(a.x_val, c.x_val)
    assert torch.equal(a.x_test, c.x_test)  # the test split never depends on the config
    assert a.info.n_train + a.info.n_val + a.info.n_test == 1797
    sub = load_dataset(DataConfig(max_train=100, max_test=50))
    assert (len(sub.x_train), len(sub.x_test)) == (100, 50)
    assert torch.equal(sub.x_train, a.x_train[:100])


def test_unknown_dataset():
    with pytest.raises(DatasetError, match="unknown dataset 'cifar100'; available: digits, fashion_mnist, mnist"):
        load_dataset(DataConfig(dataset="cifar100"))


def test_train_and_val_are_disjoint_and_max_train_keeps_val():
    full = load_dataset(DataConfig(val_fraction=0.2))
    sub = load_dataset(DataConfig(val_fraction=0.2, max_train=50))
    assert torch.equal(full.x_val, sub.x_val)
    rows = lambda t: {tuple(r.tolist()) for r in t.flatten(1)}  # noqa: E731
    # digits has a few duplicate images; disjoint index sets leave at most those in common
    assert len(rows(full.x_train) & rows(full.x_val)) <= 5
    assert full.info.n_train + full.info.n_val == 1347


def test_empty_training_split_is_an_error():
    with pytest.raises(DatasetError, match="leaves no training samples"):
        load_dataset(DataConfig(val_fraction=0.9999))


def test_corrupt_first_mirror_falls_through_to_the_next(tmp_path):
    remote, arrays = make_idx_dataset(tmp_path / "good" / "tiny")
    bad = tmp_path / "bad" / "tiny"
    bad.mkdir(parents=True)
    for spec in remote.files.values():
        (bad / spec.filename).write_bytes(b"<html>not found</html>")
    source = IdxSource(folder="tiny", urls=(bad.as_uri() + "/", (tmp_path / "good" / "tiny").as_uri() + "/"),
                       files=remote.files, citation="test")
    got = fetch_idx(source, tmp_path / "cache")
    np.testing.assert_array_equal(got["train_y"], arrays["train_y"])
    assert not list((tmp_path / "cache" / "tiny").glob("*.part"))


def test_validation_split_is_stratified():
    ds = load_dataset(DataConfig(val_fraction=0.1))
    val = torch.bincount(ds.y_val, minlength=10).double()
    share = torch.bincount(torch.cat([ds.y_train, ds.y_val]), minlength=10).double() * ds.info.n_val / (ds.info.n_train + ds.info.n_val)
    assert torch.all((val - share).abs() <= 1.0), (val, share)


# scikit-learn's documented sizes ("Toy datasets" in its user guide): samples, features, samples per class
SKLEARN_SETS = {"iris": (150, 4, [50, 50, 50]), "wine": (178, 13, [59, 71, 48]), "breast_cancer": (569, 30, [212, 357])}


@pytest.mark.parametrize("name", sorted(SKLEARN_SETS))
def test_sklearn_tabular_sets(name):
    n, f, counts = SKLEARN_SETS[name]
    ds = load_dataset(DataConfig(dataset=name, val_fraction=0.1))
    i = ds.info
    n_test = n - int(n * 0.75)  # train_test_split(test_size=0.25) rounds the test size up
    assert (i.input_shape, i.num_classes, i.n_test, i.n_train + i.n_val) == ((f,), len(counts), n_test, n - n_test)
    assert torch.bincount(torch.cat([ds.y_train, ds.y_val, ds.y_test])).tolist() == counts
    share = torch.tensor(counts, dtype=torch.float64) * n_test / n
    assert (torch.bincount(ds.y_test).double() - share).abs().max() <= 1.0  # stratified
    # standardised with the training samples' statistics (raw scales differ by 1e3 in wine and breast_cancer)
    assert "standardised" in i.source
    std = ds.x_train.std(0, unbiased=False)  # std / (std + 1e-4): breast_cancer's smallest raw std is ~2.6e-3
    assert ds.x_train.mean(0).abs().max() < 1e-5 and 0.95 < std.min() and std.max() <= 1.0 + 1e-5


@pytest.mark.parametrize("name", sorted(SKLEARN_SETS))
def test_sklearn_holdout_is_fixed_like_digits(name):
    import sklearn.datasets
    from sklearn.model_selection import train_test_split

    a = load_dataset(DataConfig(dataset=name))
    b = load_dataset(DataConfig(dataset=name))
    c = load_dataset(DataConfig(dataset=name, split_seed=1))
    assert a.info.checksum == b.info.checksum == c.info.checksum  # the test holdout never depends on the config
    assert torch.equal(a.x_val, b.x_val) and not torch.equal(a.x_val, c.x_val)  # the val split follows split_seed
    d = getattr(sklearn.datasets, f"load_{name}")()
    *_, y_te = train_test_split(d.data, d.target, test_size=0.25, random_state=0, stratify=d.target)
    assert a.y_test.tolist() == y_te.tolist()  # digits' rule: stratified 25%, random_state 0, official order kept


def test_dataset_families():
    assert list_datasets("sklearn") == ["breast_cancer", "iris", "wine"]
    assert list_datasets("images") == ["digits", "fashion_mnist", "mnist"]
    assert {"mushroom", "climate", "dna", "cifar10"} <= set(list_datasets())
