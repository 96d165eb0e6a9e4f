"""scikit-feature .mat datasets: the real files when present, small .mat files the test writes (checksums,
damaged files, download with mirror fallback), the stratified holdout, standardisation with training
statistics only, and the seeded max_test subset."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

import sparsebench.methods.data.sources.mat as data
from sparsebench.methods import DataConfig, DatasetError, list_datasets, load_dataset
from sparsebench.methods.data import RemoteFile
from sparsebench.methods.data.sources.mat import MatSource, fetch_mat, parse_mat

# Sizes of the official scikit-feature files: samples x features (classes)
README_SIZES = {"coil20": (1440, 1024, 20), "madelon": (2600, 500, 2), "lung_small": (73, 325, 7), "arcene": (200, 10000, 2)}
SKFEATURE_NAMES = ["allaml", "arcene", "basehock", "coil20", "glioma", "isolet", "leukemia", "lung_small", "madelon",
                   "orl", "orlraws10p", "pcmac", "prostate_ge", "relathe", "tox_171"]


def _np(t: torch.Tensor) -> np.ndarray:
    return t.double().numpy()


# --------------------------------------------------------------------------------------------------
# (a) the real files
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(README_SIZES))
def test_real_scikit_feature_set(name, shared_datasets, monkeypatch):
    monkeypatch.setenv("SPARSEBENCH_DATA", str(shared_datasets))
    n, f, c = README_SIZES[name]
    ds = load_dataset(DataConfig(dataset=name, val_fraction=0.1))
    i = ds.info
    n_pool = int(n * 2 / 3)  # 2/3 train pool (the authors' int(N * 2 / 3)), 1/3 test
    assert (i.in_features, i.num_classes) == (f, c)
    assert (i.n_test, i.n_val, i.n_train) == (n - n_pool, round(0.1 * n_pool), n_pool - round(0.1 * n_pool))
    assert ds.x_train.shape == (i.n_train, f) and ds.x_test.shape == (i.n_test, f) and ds.x_val.shape == (i.n_val, f)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64

    y_all = torch.cat([ds.y_train, ds.y_val, ds.y_test])
    counts = torch.bincount(y_all, minlength=c)
    assert len(counts) == c and counts.min() > 0  # labels are exactly 0..C-1
    if name == "madelon":
        assert counts.tolist() == [1300, 1300]  # -1/1 -> 0/1
    if name == "arcene":
        assert counts.tolist() == [112, 88]  # -1 (112) / 1 (88)

    # stratified: each class's share of the test split is its share of the data, to one sample
    test_counts = torch.bincount(ds.y_test, minlength=c).double()
    assert (test_counts - counts.double() * i.n_test / n).abs().max() <= 1.0
    assert all(test_counts[k] > 0 for k in range(c) if counts[k] >= 3)

    # standardised with the statistics of the training samples: mean 0 and std ~1 there, not on val/test
    x_tr, x_val, x_te = _np(ds.x_train), _np(ds.x_val), _np(ds.x_test)
    assert np.isfinite(x_tr).all() and np.isfinite(x_val).all() and np.isfinite(x_te).all()
    assert np.abs(x_tr.mean(0)).max() < 1e-5
    std = x_tr.std(0)
    constant = std == 0  # a feature constant in the training samples maps to exactly 0 there
    assert np.all(x_tr[:, constant] == 0)
    assert 0.98 < std[~constant].min() and std.max() <= 1.0 + 1e-5  # std / (std + 1e-4) <= 1
    assert (name == "arcene") == bool(constant.any())  # arcene has 39 constant features (more in a subset)
    assert np.abs(x_val.mean(0)).mean() > 1e-3 and np.abs(x_te.mean(0)).mean() > 1e-3


def test_real_holdout_follows_split_seed(shared_datasets, monkeypatch):
    monkeypatch.setenv("SPARSEBENCH_DATA", str(shared_datasets))
    a = load_dataset(DataConfig(dataset="lung_small"))
    b = load_dataset(DataConfig(dataset="lung_small"))
    c = load_dataset(DataConfig(dataset="lung_small", split_seed=1))
    assert torch.equal(a.x_test, b.x_test) and torch.equal(a.y_test, b.y_test) and a.info.checksum == b.info.checksum
    assert a.info.n_test == c.info.n_test and not torch.equal(a.x_test, c.x_test)
    assert torch.equal(torch.bincount(a.y_test), torch.bincount(c.y_test))  # stratified: same class counts


def test_real_standardisation_uses_only_the_samples_trained_on(shared_datasets, monkeypatch):
    """With max_train the statistics come from the subset: its mean is 0, and the test features change."""
    monkeypatch.setenv("SPARSEBENCH_DATA", str(shared_datasets))
    full = load_dataset(DataConfig(dataset="coil20"))
    sub = load_dataset(DataConfig(dataset="coil20", max_train=40))
    assert sub.info.n_train == 40 and sub.info.n_val == full.info.n_val
    assert np.abs(_np(sub.x_train).mean(0)).max() < 1e-5
    assert torch.equal(sub.y_test, full.y_test) and not torch.allclose(sub.x_test, full.x_test)
    assert np.abs(_np(sub.x_val).mean(0)).mean() > 1e-2  # the val samples did not contribute


# --------------------------------------------------------------------------------------------------
# (b) small .mat files the test writes
# --------------------------------------------------------------------------------------------------
def write_mat(path: Path, n=60, f=5, labels=(1, 2, 3), seed=0) -> tuple[np.ndarray, np.ndarray, RemoteFile]:
    """A .mat in scikit-feature's layout. Column 0 is the sample id 0..n-1 (as float), so that the rows of
    every split can be told apart after standardisation; the other columns are random integers."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([np.arange(n, dtype=np.float64)[:, None], rng.integers(0, 50, (n, f - 1)).astype(np.float64)], 1)
    y = np.asarray(labels, dtype=np.int16)[np.arange(n) % len(labels)][:, None]
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {"X": x, "Y": y})
    return x, y, RemoteFile(path.name, sha256_raw=hashlib.sha256(path.read_bytes()).hexdigest(), compressed=False)


def tiny_source(spec: RemoteFile, urls=()) -> MatSource:
    return MatSource(folder="scikit-feature", urls=urls, files={"coil20": spec}, citation="test")


def test_parse_mat_maps_labels_to_0_based(tmp_path):
    x, _, _ = write_mat(tmp_path / "a.mat", labels=(-1, 1))
    got_x, got_y = parse_mat((tmp_path / "a.mat").read_bytes())
    assert got_x.dtype == np.float32 and got_y.dtype == np.int64
    np.testing.assert_array_equal(got_x, x.astype(np.float32))
    np.testing.assert_array_equal(got_y, np.arange(60) % 2)  # -1 -> 0, 1 -> 1
    write_mat(tmp_path / "b.mat", labels=(1, 2, 3, 4))
    assert np.bincount(parse_mat((tmp_path / "b.mat").read_bytes())[1]).tolist() == [15, 15, 15, 15]


def test_load_dataset_on_a_small_mat_standardises_with_training_rows_only(tmp_path, monkeypatch):
    x, y, spec = write_mat(tmp_path / "scikit-feature" / "tiny.mat", n=60, f=5, labels=(1, 2, 3))
    monkeypatch.setattr(data, "SCIKIT_FEATURE", tiny_source(spec))
    ds = load_dataset(DataConfig(dataset="coil20", val_fraction=0.25), root=tmp_path)
    assert (ds.info.n_train, ds.info.n_val, ds.info.n_test) == (30, 10, 20) and ds.info.num_classes == 3
    assert sorted(torch.bincount(ds.y_test).tolist()) == [6, 7, 7]  # stratified: 20 per class, a third of each
    assert "standardised" in ds.info.source
    # Column 0 is the sample id, mapped by one increasing affine function in every split: the rank of a
    # value among all 60 gives the id, hence the raw row of every sample of every split.
    splits = {"train": (ds.x_train, ds.y_train), "val": (ds.x_val, ds.y_val), "test": (ds.x_test, ds.y_test)}
    z0 = torch.cat([s[0][:, 0] for s in splits.values()]).double().numpy()
    ids = np.empty(len(z0), dtype=np.int64)
    ids[np.argsort(z0)] = np.arange(len(z0))
    ids = dict(zip(splits, np.split(ids, np.cumsum([len(s[1]) for s in splits.values()])[:-1])))
    assert sorted(np.concatenate(list(ids.values()))) == list(range(60))  # disjoint splits covering the data
    raw_train = x[ids["train"]]
    mean, scale = raw_train.mean(0), raw_train.std(0) + 1e-4  # the authors' formula, training rows only
    for split, (xs, ys) in splits.items():
        np.testing.assert_allclose(_np(xs), (x[ids[split]] - mean) / scale, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(ys.numpy(), y[ids[split], 0] - 1)  # labels 1..3 -> 0..2 follow their rows


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_mat_is_a_checksum_error(tmp_path, damage):
    path = tmp_path / "scikit-feature" / "tiny.mat"
    _, _, spec = write_mat(path)
    raw = bytearray(path.read_bytes())
    if damage == "flip":
        raw[len(raw) // 2] ^= 0xFF
    else:
        del raw[len(raw) // 2:]
    path.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match=r"tiny\.mat: checksum mismatch \(sha256 of file .*delete it to download it again"):
        fetch_mat(tiny_source(spec), "coil20", tmp_path, download=False)


def test_unreadable_mat_with_matching_checksum_is_a_one_line_error(tmp_path):
    """No scipy traceback even when the checksum is not what protects the reader (e.g. a wrong pinned sum)."""
    folder = tmp_path / "scikit-feature"
    write_mat(folder / "tiny.mat")
    raw = (folder / "tiny.mat").read_bytes()
    cases = {"truncated.mat": raw[: len(raw) // 2], "garbage.mat": b"<html>404 not found</html>" * 20}
    for filename, blob in cases.items():
        (folder / filename).write_bytes(blob)
        spec = RemoteFile(filename, sha256_raw=hashlib.sha256(blob).hexdigest(), compressed=False)
        with pytest.raises(DatasetError, match=rf"{filename}: .*(not a readable MATLAB file|no variable)") as e:
            fetch_mat(tiny_source(spec), "coil20", tmp_path, download=False)
        assert "\n" not in str(e.value)
    scipy.io.savemat(folder / "nolabels.mat", {"X": np.ones((3, 2))})
    spec = RemoteFile("nolabels.mat", sha256_raw=hashlib.sha256((folder / "nolabels.mat").read_bytes()).hexdigest(), compressed=False)
    with pytest.raises(DatasetError, match=r"nolabels\.mat: no variable 'Y' in the MATLAB file \(variables: X\)"):
        fetch_mat(tiny_source(spec), "coil20", tmp_path, download=False)


def test_missing_mat_without_download(tmp_path):
    _, _, spec = write_mat(tmp_path / "elsewhere" / "tiny.mat")
    with pytest.raises(DatasetError, match="tiny.mat: missing"):
        fetch_mat(tiny_source(spec), "coil20", tmp_path, download=False)


def test_mat_download_into_empty_cache_with_mirror_fallthrough(tmp_path):
    x, _, spec = write_mat(tmp_path / "good" / "tiny.mat")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "tiny.mat").write_bytes(b"<html>not found</html>")  # a mirror that serves the wrong bytes
    source = tiny_source(spec, urls=("file:///nonexistent/", (tmp_path / "bad").as_uri() + "/", (tmp_path / "good").as_uri() + "/"))
    cache = tmp_path / "cache"
    got_x, got_y = fetch_mat(source, "coil20", cache)
    np.testing.assert_array_equal(got_x, x.astype(np.float32))
    assert [p.name for p in (cache / "scikit-feature").iterdir()] == ["tiny.mat"]  # verified, then moved; no .part left
    assert (cache / "scikit-feature" / "tiny.mat").read_bytes() == (tmp_path / "good" / "tiny.mat").read_bytes()


def test_mat_download_failure_names_the_file_and_every_source(tmp_path):
    _, _, spec = write_mat(tmp_path / "good" / "tiny.mat")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "tiny.mat").write_bytes(b"<html>not found</html>")
    source = tiny_source(spec, urls=("file:///nonexistent/", (tmp_path / "bad").as_uri() + "/"))
    with pytest.raises(DatasetError, match=r"tiny\.mat: download failed from every source .*nonexistent.*checksum mismatch"):
        fetch_mat(source, "coil20", tmp_path / "cache")
    assert not list((tmp_path / "cache" / "scikit-feature").iterdir())


# --------------------------------------------------------------------------------------------------
# (c) max_test: a random subset chosen by split_seed
# --------------------------------------------------------------------------------------------------
def test_max_test_is_a_seeded_random_subset():
    full = load_dataset(DataConfig())
    a = load_dataset(DataConfig(max_test=100))
    b = load_dataset(DataConfig(max_test=100))
    c = load_dataset(DataConfig(max_test=100, split_seed=1))
    small = load_dataset(DataConfig(max_test=30))
    assert a.info.n_test == len(a.x_test) == len(a.y_test) == 100 and len(small.x_test) == 30
    assert torch.equal(a.x_test, b.x_test) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_test, c.x_test)
    assert not torch.equal(a.x_test, full.x_test[:100])  # not the first ones any more

    def positions(sub):  # index in the full test split of every row (features and label together)
        flat, ref = sub.x_test.flatten(1), full.x_test.flatten(1)
        return [next(j for j in range(len(ref)) if torch.equal(ref[j], flat[i]) and full.y_test[j] == sub.y_test[i])
                for i in range(len(flat))]

    pa, pc, ps = positions(a), positions(c), positions(small)
    assert pa == sorted(pa) and len(set(pa)) == 100  # distinct rows of the full test split, official order kept
    assert set(ps) <= set(pa)  # a smaller max_test is a subset of a larger one
    assert len(set(pa) & set(pc)) < 60  # another seed: a mostly different subset (expected overlap 100*100/450)
    assert max(pa) > 300  # drawn from the whole split
    same = load_dataset(DataConfig(max_test=10_000))  # more than there are: the whole split, unchanged
    assert torch.equal(same.x_test, full.x_test)


# --------------------------------------------------------------------------------------------------
# (d) registry
# --------------------------------------------------------------------------------------------------
def test_every_scikit_feature_set_is_registered():
    names = list_datasets()
    for name in SKFEATURE_NAMES:
        assert name in names
        DataConfig(dataset=name)
    assert list_datasets("scikit-feature") == SKFEATURE_NAMES
    assert set(data.SCIKIT_FEATURE.files) == set(SKFEATURE_NAMES)
    assert names[:3] == ["digits", "fashion_mnist", "mnist"]  # the image sets first, as before
    with pytest.raises(DatasetError, match="unknown dataset 'lung'; available: .*lung_small"):
        load_dataset(DataConfig(dataset="lung"))


def test_image_datasets_are_not_standardised(digits):
    assert "standardised" not in digits.info.source
    assert digits.x_train.min() == 0.0 and digits.x_train.max() == 1.0


def test_features_constant_in_training_are_zeroed_not_blown_up():
    from sparsebench.methods.data import standardize

    x_train = np.array([[1.0, 5.0], [3.0, 5.0]], dtype=np.float32)
    x_test = np.array([[2.0, 9.0]], dtype=np.float32)
    tr, te = standardize(x_train, x_test)
    assert tr[:, 1].tolist() == [0.0, 0.0] and te[0, 1] == 0.0  # not (9 - 5) / 1e-4 = 4e4
    assert tr[:, 0] == pytest.approx([-1 / (1 + 1e-4), 1 / (1 + 1e-4)]) and te[0, 0] == 0.0
