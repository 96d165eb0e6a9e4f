"""UCI sets (mushroom, climate, dna): the real files when present (checksums, shapes, class counts against
the values of the official files), small files the test writes (parsing, every bad input a one-line error naming the
file), the stratified holdout by split_seed, the official DNA split, and missing / damaged / downloaded files."""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

import sparsebench.methods.data.sources.uci as uci
from sparsebench.methods import DataConfig, DatasetError, list_datasets, load_dataset
from sparsebench.methods.data import FileSource, RemoteFile, fetch_source
from sparsebench.methods.data.sources.uci import parse_climate, parse_libsvm, parse_mushroom

# sha256 of the official files (copied here, not taken from the loader, so that both are checked)
README_SHA256 = {
    "uci/mushroom/agaricus-lepiota.data": "e65d082030501a3ebcbcd7c9f7c71aa9d28fdfff463bf4cf4716a3fe13ac360e",
    "uci/climate/pop_failures.dat": "8a892cbb056072e84749aed7409d6f17c7b4a1c899fc98ce52dc2af8b727ff9c",
    "uci/dna/dna.scale": "f74937ccb8908628058ae1819d4d46c960ce64383f622c994d4f2e6e21026494",
    "uci/dna/dna.scale.t": "d2eeed170e4e38ae2aba6aa4cd27a8ca4ecceb01a7751e8e509bb4e1a6bcef39",
}
SOURCES = {"mushroom": "MUSHROOM", "climate": "CLIMATE", "dna": "DNA"}  # dataset -> attribute of methods.data_uci


def _one_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


@pytest.fixture
def shared_uci(shared_datasets, monkeypatch):
    monkeypatch.setenv("SPARSEBENCH_DATA", str(shared_datasets))
    return shared_datasets


# --------------------------------------------------------------------------------------------------
# (a) the real files
# --------------------------------------------------------------------------------------------------
def test_real_files_match_the_readme_and_the_pinned_checksums(shared_uci):
    pinned = {f"{s.folder}/{spec.filename}": spec.sha256_raw
              for s in (uci.MUSHROOM, uci.CLIMATE, uci.DNA) for spec in s.files.values()}
    assert pinned == README_SHA256
    for rel, sha in README_SHA256.items():
        assert hashlib.sha256((shared_uci / rel).read_bytes()).hexdigest() == sha


def test_real_mushroom(shared_uci):
    ds = load_dataset(DataConfig(dataset="mushroom", val_fraction=0.1))
    i = ds.info
    n_pool = int(8124 * 2 / 3)  # 5416 train pool, 2708 test (stratified_holdout, as the scikit-feature sets)
    assert (i.input_shape, i.num_classes, i.n_test, i.n_train + i.n_val) == ((126,), 2, 8124 - n_pool, n_pool)
    x = torch.cat([ds.x_train, ds.x_val, ds.x_test])
    y = torch.cat([ds.y_train, ds.y_val, ds.y_test])
    assert torch.bincount(y).tolist() == [4208, 3916]  # README: e 4208 / p 3916
    assert set(x.unique().tolist()) == {0.0, 1.0} and torch.all(x.sum(1) == 22)  # one value of each of 22 attributes
    assert x[:, uci.MUSHROOM_FEATURES.index("stalk-root=?")].sum() == 2480  # README: 2480 '?' in stalk-root
    assert x[:, uci.MUSHROOM_FEATURES.index("veil-type=p")].sum() == 8124  # documented order: veil-type p, u
    assert "standardised" not in i.source
    test_counts = torch.bincount(ds.y_test).double()
    assert (test_counts - torch.tensor([4208.0, 3916.0]) * i.n_test / 8124).abs().max() <= 1.0  # stratified


def test_real_climate(shared_uci):
    ds = load_dataset(DataConfig(dataset="climate", val_fraction=0.1))
    i = ds.info
    assert (i.input_shape, i.num_classes, i.n_test, i.n_train + i.n_val) == ((18,), 2, 180, 360)
    x = torch.cat([ds.x_train, ds.x_val, ds.x_test])
    assert torch.bincount(torch.cat([ds.y_train, ds.y_val, ds.y_test])).tolist() == [46, 494]  # README: 46 failures
    assert 0.0 <= x.min() and x.max() <= 1.0  # the 18 parameters only: Study (1..3) and Run (1..180) dropped
    assert torch.bincount(ds.y_test).tolist() == [15, 165]  # stratified: a third of each class


def test_real_dna_official_split(shared_uci):
    ds = load_dataset(DataConfig(dataset="dna", val_fraction=0.1))
    i = ds.info
    assert (i.input_shape, i.num_classes, i.n_train + i.n_val, i.n_test) == ((180,), 3, 2000, 1186)  # README
    assert torch.bincount(ds.y_test).tolist() == [303, 280, 603]  # counted from dna.scale.t, labels 1..3 -> 0..2
    assert torch.bincount(torch.cat([ds.y_train, ds.y_val])).tolist() == [464, 485, 1051]  # counted from dna.scale
    assert set(torch.cat([ds.x_train, ds.x_test]).unique().tolist()) == {0.0, 1.0}
    other = load_dataset(DataConfig(dataset="dna", val_fraction=0.1, split_seed=1))
    assert torch.equal(ds.x_test, other.x_test) and ds.info.checksum == other.info.checksum  # the split is official


def test_real_dna_crlf_and_lf_read_the_same(shared_uci):
    raw = (shared_uci / "uci/dna/dna.scale").read_bytes()
    assert raw.count(b"\r\n") == 2000  # README: CRLF line endings
    x_crlf, y_crlf = parse_libsvm(raw)
    x_lf, y_lf = parse_libsvm(raw.replace(b"\r\n", b"\n"))
    assert x_crlf.shape == (2000, 180) and np.array_equal(x_crlf, x_lf) and np.array_equal(y_crlf, y_lf)


@pytest.mark.parametrize("name", ["mushroom", "climate"])
def test_real_holdout_follows_split_seed(name, shared_uci):
    a = load_dataset(DataConfig(dataset=name))
    b = load_dataset(DataConfig(dataset=name))
    c = load_dataset(DataConfig(dataset=name, split_seed=1))
    assert torch.equal(a.x_test, b.x_test) and torch.equal(a.x_val, b.x_val) and a.info.checksum == b.info.checksum
    assert a.info.n_test == c.info.n_test and not torch.equal(a.x_test, c.x_test) and a.info.checksum != c.info.checksum
    assert torch.equal(torch.bincount(a.y_test), torch.bincount(c.y_test))  # stratified: same class counts


# --------------------------------------------------------------------------------------------------
# (b) small files the test writes
# --------------------------------------------------------------------------------------------------
def _mushroom_rows(n: int = 30) -> list[str]:
    """Row k takes value k mod len(codes) of every attribute: every listed value occurs, '?' included."""
    rows = []
    for k in range(n):
        attrs = [codes[k % len(codes)] for _, codes in uci.MUSHROOM_ATTRIBUTES]
        rows.append(",".join(["ep"[k % 2], *attrs]))
    return rows


def _climate_text(n: int = 30) -> str:
    rng = np.random.default_rng(0)
    lines = ["  ".join(uci.CLIMATE_COLUMNS)]
    for k in range(n):
        params = " ".join(f"{v:.16g}" for v in rng.random(18))
        lines.append(f"    {1 + k // 10}  {1 + k % 10}  {params}  {int(k % 5 != 0)}")  # every 5th run fails
    return "\n".join(lines) + "\n"


def _dna_text(n: int, crlf: bool, seed: int) -> str:
    rng = np.random.default_rng(seed)
    lines = []
    for k in range(n):
        idx = np.flatnonzero(rng.random(180) < 0.25) + 1
        lines.append(f"{1 + k % 3} " + " ".join(f"{j}:1" for j in idx) + " ")  # LIBSVM's trailing blank, as dna.scale
    return ("\r\n" if crlf else "\n").join(lines) + ("\r\n" if crlf else "\n")


def _write(path: Path, text: str | bytes) -> RemoteFile:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return RemoteFile(path.name, sha256_raw=hashlib.sha256(path.read_bytes()).hexdigest(), compressed=False)


def _tiny(monkeypatch, name: str, root: Path, texts: dict[str, str | bytes], urls=()) -> FileSource:
    """Point dataset `name` at files written under root/<its folder>/ with their real checksums."""
    real = getattr(uci, SOURCES[name])
    folder = root / real.folder
    files = {role: _write(folder / real.files[role].filename, texts[role]) for role in real.files}
    source = dataclasses.replace(real, urls=urls, files=files)
    monkeypatch.setattr(uci, SOURCES[name], source)
    return source


def test_parse_mushroom_one_hot_in_documented_order():
    rows = _mushroom_rows(30)
    x, y = parse_mushroom(("\n".join(rows) + "\n").encode())
    assert x.shape == (30, 126) and x.dtype == np.float32 and y.dtype == np.int64
    assert y.tolist() == [k % 2 for k in range(30)]  # e -> 0, p -> 1
    assert np.all(x.sum(1) == 22) and np.all(x.sum(0) > 0)  # 30 rows reach every listed value
    assert uci.MUSHROOM_FEATURES[:6] == tuple(f"cap-shape={c}" for c in "bcxfks") and uci.MUSHROOM_FEATURES[-1] == "habitat=d"
    fields = rows[6].split(",")[1:]
    assert [uci.MUSHROOM_FEATURES[j] for j in np.flatnonzero(x[6])] == [
        f"{attr}={v}" for (attr, _), v in zip(uci.MUSHROOM_ATTRIBUTES, fields)]
    assert "stalk-root=?" in [uci.MUSHROOM_FEATURES[j] for j in np.flatnonzero(x[6])]  # k = 6: the 7th stalk-root value


def test_mushroom_loads_from_files_the_test_writes(tmp_path, monkeypatch):
    _tiny(monkeypatch, "mushroom", tmp_path, {"data": "\r\n".join(_mushroom_rows(30)) + "\r\n"})
    ds = load_dataset(DataConfig(dataset="mushroom", val_fraction=0.1), root=tmp_path)
    assert (ds.info.n_train + ds.info.n_val, ds.info.n_test, ds.info.input_shape) == (20, 10, (126,))
    assert torch.bincount(ds.y_test).tolist() == [5, 5]


def test_climate_loads_from_files_the_test_writes(tmp_path, monkeypatch):
    _tiny(monkeypatch, "climate", tmp_path, {"data": _climate_text(30)})
    x, y = parse_climate(_climate_text(30).encode())
    assert x.shape == (30, 18) and y.tolist() == [int(k % 5 != 0) for k in range(30)]
    ds = load_dataset(DataConfig(dataset="climate", val_fraction=0.1), root=tmp_path)
    assert (ds.info.n_train + ds.info.n_val, ds.info.n_test, ds.info.input_shape) == (20, 10, (18,))
    assert torch.bincount(ds.y_test).tolist() == [2, 8]  # 6 failures in 30, a third of them in the test split
    rows = {tuple(r) for r in np.round(x, 6).tolist()}
    assert {tuple(r) for r in np.round(ds.x_test.numpy(), 6).tolist()} <= rows  # the parameters, unscaled


def test_dna_loads_both_files_the_test_writes(tmp_path, monkeypatch):
    _tiny(monkeypatch, "dna", tmp_path, {"train": _dna_text(30, crlf=True, seed=0), "test": _dna_text(12, crlf=False, seed=1)})
    ds = load_dataset(DataConfig(dataset="dna", val_fraction=0.1), root=tmp_path)
    assert (ds.info.n_train + ds.info.n_val, ds.info.n_test, ds.info.input_shape, ds.info.num_classes) == (30, 12, (180,), 3)
    assert ds.y_test.tolist() == [k % 3 for k in range(12)]  # the official order of the test file, labels 1..3 -> 0..2
    x_te, _ = parse_libsvm(_dna_text(12, crlf=False, seed=1).encode())
    assert torch.equal(ds.x_test, torch.from_numpy(x_te))


def _set_field(rows: list[str], line: int, column: int, value: str) -> list[str]:
    fields = rows[line - 1].split(",")
    fields[column] = value
    return rows[: line - 1] + [",".join(fields)] + rows[line:]


MUSHROOM_BAD = {
    "wrong field count": (lambda r: _set_field(r, 4, 22, "l,x"), r"line 4: 23 comma-separated values expected .*got 24"),
    "unknown value": (lambda r: _set_field(r, 3, 1, "Q"), r"line 3: cap-shape value 'Q' is not one of b, c, x, f, k, s"),
    "unknown class": (lambda r: _set_field(r, 1, 0, "x"), r"line 1: class value 'x' is not one of e, p"),
    "missing as empty": (lambda r: _set_field(r, 2, 11, ""), r"line 2: stalk-root value '' is not one of b, c, u, e, z, r, \?"),
    "empty": (lambda r: [], r"no data rows"),
}


@pytest.mark.parametrize("case", sorted(MUSHROOM_BAD))
def test_bad_mushroom_file_is_a_one_line_error(case, tmp_path, monkeypatch):
    edit, pattern = MUSHROOM_BAD[case]
    _tiny(monkeypatch, "mushroom", tmp_path, {"data": "\n".join(edit(_mushroom_rows(6))) + "\n"})
    with pytest.raises(DatasetError, match=r"uci/mushroom/agaricus-lepiota\.data: " + pattern) as e:
        load_dataset(DataConfig(dataset="mushroom"), root=tmp_path)
    _one_line_error(e)


CLIMATE_BAD = {
    "no header": (lambda t: t.split("\n", 1)[1], r"header Study Run vconst_corr \.\.\. outcome expected, got '1 1 0\."),
    "short row": (lambda t: t.replace("  0\n", "\n", 1), r"line 2: 21 whitespace-separated values expected, got 20"),
    "not a number": (lambda t: t.replace("  0\n", "  nope\n", 1), r"line 2: not a number \(ValueError: could not convert"),
    "outcome 2": (lambda t: t.replace("  0\n", "  2\n", 1), r"line 2: outcome 2 is not 0 \(failure\) or 1 \(success\)"),
    "header only": (lambda t: t.split("\n", 1)[0] + "\n", r"no data rows after the header"),
    "binary": (lambda t: "\xff" + t, r"not an ASCII text file"),
    "empty": (lambda t: "\n", r"empty file \(a header Study Run vconst_corr \.\.\. outcome and data rows expected\)"),
}


@pytest.mark.parametrize("case", sorted(CLIMATE_BAD))
def test_bad_climate_file_is_a_one_line_error(case, tmp_path, monkeypatch):
    edit, pattern = CLIMATE_BAD[case]
    text = edit(_climate_text(6))
    _tiny(monkeypatch, "climate", tmp_path, {"data": text.encode("latin-1")})
    with pytest.raises(DatasetError, match=r"uci/climate/pop_failures\.dat: " + pattern) as e:
        load_dataset(DataConfig(dataset="climate"), root=tmp_path)
    _one_line_error(e)


DNA_BAD = {
    "index 181": ("1 2:1 181:1\r\n", r"not a LIBSVM file of 180 features \(ValueError: .*181"),
    "label 4": ("1 2:1\r\n4 3:1\r\n", r"label 4 \(row 2\) is not one of 1, 2, 3"),
    "not binary": ("1 2:0.5\r\n", r"features must be binary \(0/1\); found the value 0\.5"),
    "not a number": ("1 2:x\r\n", r"not a LIBSVM file of 180 features \(ValueError: could not convert"),
    "html page": ("<html>not found</html>\n", r"not a LIBSVM file of 180 features"),
    "empty": ("", r"no data rows"),
}


@pytest.mark.parametrize("case", sorted(DNA_BAD))
def test_bad_dna_file_is_a_one_line_error(case, tmp_path, monkeypatch):
    text, pattern = DNA_BAD[case]
    _tiny(monkeypatch, "dna", tmp_path, {"train": _dna_text(6, crlf=True, seed=0), "test": text})
    with pytest.raises(DatasetError, match=r"uci/dna/dna\.scale\.t: " + pattern) as e:
        load_dataset(DataConfig(dataset="dna"), root=tmp_path)
    _one_line_error(e)


# --------------------------------------------------------------------------------------------------
# (c) missing, damaged and downloaded files: the registered sources, no network
# --------------------------------------------------------------------------------------------------
URLS = {"mushroom": "https://archive.ics.uci.edu/ml/machine-learning-databases/mushroom/agaricus-lepiota.data",
        "climate": "https://archive.ics.uci.edu/ml/machine-learning-databases/00252/pop_failures.dat",
        "dna": "https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/multiclass/dna.scale"}


@pytest.mark.parametrize("name", sorted(URLS))
def test_missing_file_says_where_it_was_looked_for_and_where_to_get_it(name, tmp_path):
    source = getattr(uci, SOURCES[name])
    role = next(iter(source.files))
    with pytest.raises(DatasetError) as e:
        fetch_source(source, role, tmp_path, download=False)
    path = tmp_path / source.folder / source.files[role].filename
    assert _one_line_error(e) == f"{path}: missing (downloads are off); get it from {URLS[name]}"


@pytest.mark.parametrize("name", sorted(URLS))
def test_corrupt_file_in_sparsebench_data_is_a_checksum_error(name, tmp_path, monkeypatch):
    """A wrong file under the real name fails the pinned sha256 before it is parsed (no network: it exists)."""
    source = getattr(uci, SOURCES[name])
    for spec in source.files.values():
        _write(tmp_path / source.folder / spec.filename, "e,x,s\n")
    monkeypatch.setenv("SPARSEBENCH_DATA", str(tmp_path))
    first = next(iter(source.files.values())).filename
    with pytest.raises(DatasetError, match=rf"{source.folder}/{first}: checksum mismatch \(sha256 of file .*\); "
                                           rf"delete it to download it again from {URLS[name]}$") as e:
        load_dataset(DataConfig(dataset=name))
    _one_line_error(e)


def test_download_tries_mirrors_in_order_and_verifies_before_moving(tmp_path, monkeypatch):
    good, bad = tmp_path / "good", tmp_path / "bad"
    texts = {"train": _dna_text(9, crlf=True, seed=0), "test": _dna_text(6, crlf=False, seed=1)}
    served = _tiny(monkeypatch, "dna", good, texts)  # files with their real checksums, under good/uci/dna/
    for spec in served.files.values():
        _write(bad / spec.filename, "<html>not found</html>")
    urls = ("file:///nonexistent/", bad.as_uri() + "/", (good / served.folder).as_uri() + "/")
    monkeypatch.setattr(uci, "DNA", dataclasses.replace(served, urls=urls))
    cache = tmp_path / "cache"
    ds = load_dataset(DataConfig(dataset="dna", val_fraction=0.1), root=cache)
    assert ds.info.n_test == 6
    assert sorted(p.name for p in (cache / "uci" / "dna").iterdir()) == ["dna.scale", "dna.scale.t"]  # no .part left
    assert (cache / "uci/dna/dna.scale").read_bytes() == texts["train"].encode()


def test_download_failure_names_the_file_every_source_and_the_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(uci, "CLIMATE", dataclasses.replace(uci.CLIMATE, urls=("file:///nonexistent/",)))
    with pytest.raises(DatasetError, match=r"^pop_failures\.dat: download failed from every source \(file:///nonexistent/: .*\); "
                                           rf"put the file in {tmp_path}/uci/climate or set SPARSEBENCH_DATA$") as e:
        load_dataset(DataConfig(dataset="climate"), root=tmp_path)
    _one_line_error(e)


def test_uci_family_is_registered():
    assert list_datasets("uci") == ["climate", "dna", "mushroom"]
    assert list_datasets()[:3] == ["digits", "fashion_mnist", "mnist"]
