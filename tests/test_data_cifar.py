"""CIFAR-10 on small tarballs the test writes in the format of cifar-10-python.tar.gz (the real one is not on
this machine): the images and labels as loaded, the sha256 checked before the archive is opened or anything is
unpickled, the restricted unpickler refusing a hostile batch, and every damaged input a one-line error."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

import sparsebench.methods.data.sources.cifar as cifar
from sparsebench.methods import DataConfig, DatasetError, list_datasets, load_dataset
from sparsebench.methods.data import RemoteFile, fetch_source
from sparsebench.methods.data.sources.cifar import parse_cifar_tarball, unpickle_batch

OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


def py2_pickle(obj) -> bytes:
    """Pickle protocol 2 as Python 2's cPickle wrote the CIFAR batches: strings as BINSTRING opcodes (read back as
    bytes), uint8 arrays through numpy.core.multiarray._reconstruct, numpy.ndarray and numpy.dtype."""
    out = bytearray(b"\x80\x02")  # PROTO 2

    def put(o):
        if isinstance(o, bytes):  # SHORT_BINSTRING / BINSTRING
            out.extend((b"U" + bytes([len(o)]) if len(o) < 256 else b"T" + struct.pack("<i", len(o))) + o)
        elif isinstance(o, int):  # BININT1 / BININT
            out.extend(b"K" + bytes([o]) if 0 <= o < 256 else b"J" + struct.pack("<i", o))
        elif isinstance(o, list):  # EMPTY_LIST MARK ... APPENDS
            out.extend(b"](")
            for v in o:
                put(v)
            out.extend(b"e")
        elif isinstance(o, dict):  # EMPTY_DICT MARK ... SETITEMS
            out.extend(b"}(")
            for k, v in o.items():
                put(k)
                put(v)
            out.extend(b"u")
        elif isinstance(o, np.ndarray) and o.dtype == np.uint8 and o.ndim == 2:
            out.extend(b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85")  # _reconstruct(ndarray, (0,), 'b')
            put(b"b")
            out.extend(b"\x87R(K\x01")  # state: (1, shape, dtype, fortran, data)
            put(o.shape[0])
            put(o.shape[1])
            out.extend(b"\x86cnumpy\ndtype\n")
            put(b"u1")
            out.extend(b"K\x00K\x01\x87R(K\x03")  # dtype('u1', 0, 1) with state (3, '|', None, None, None, -1, -1, 0)
            put(b"|")
            out.extend(b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89")
            put(np.ascontiguousarray(o).tobytes())
            out.extend(b"tb")
        else:
            raise TypeError(type(o))

    put(obj)
    out.extend(b".")
    return bytes(out)


def make_batches(n_train: int = 4, n_test: int = 6, seed: int = 0) -> dict[str, tuple[np.ndarray, list[int]]]:
    """Five training batches of n_train images and a test batch of n_test, random pixels, labels cycling 0..9."""
    rng = np.random.default_rng(seed)
    sizes = {**{b: n_train for b in cifar.TRAIN_BATCHES}, cifar.TEST_BATCH: n_test}
    batches, k = {}, 0
    for name, n in sizes.items():
        batches[name] = (rng.integers(0, 256, (n, 3072), dtype=np.uint8), [(k + i) % 10 for i in range(n)])
        k += n
    return batches


def write_tarball(path: Path, batches: dict, members: dict[str, bytes] | None = None) -> RemoteFile:
    """A .tar.gz laid out as cifar-10-python.tar.gz (cifar-10-batches-py/: batches.meta, data_batch_1..5,
    readme.html, test_batch). `members` replaces or adds raw members. Returns the file with its real sha256."""
    files = {"batches.meta": py2_pickle({b"num_cases_per_batch": 10000, b"label_names": [b"airplane"] * 10, b"num_vis": 3072}),
             "readme.html": b"<meta HTTP-EQUIV='REFRESH' content='0; URL=http://www.cs.utoronto.ca/~kriz/cifar.html'>"}
    for name, (data, labels) in batches.items():
        files[name] = py2_pickle({b"batch_label": f"{name} of 5".encode(), b"labels": labels, b"data": data,
                                  b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))]})
    files.update(members or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in files.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return RemoteFile(path.name, sha256_raw=hashlib.sha256(path.read_bytes()).hexdigest(), compressed=False)


def tiny_source(spec: RemoteFile, urls=()):
    return dataclasses.replace(cifar.CIFAR10, urls=urls, files={"archive": spec})


def _one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


class _Hostile:
    """Unpickles into a call of os.mkdir: what a tampered batch could run under a plain pickle.load."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return os.mkdir, (self.path,)


# --------------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------------
def test_python2_batch_pickle_reads_as_the_official_layout():
    data = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    blob = py2_pickle({b"data": data, b"labels": [3, 7]})
    assert blob.startswith(b"\x80\x02}") and b"numpy.core.multiarray\n_reconstruct" in blob
    batch = unpickle_batch(blob)
    assert batch[b"labels"] == [3, 7] and batch[b"data"].dtype == np.uint8 and np.array_equal(batch[b"data"], data)


def test_tarball_round_trip_channels_first(tmp_path):
    batches = make_batches()
    write_tarball(tmp_path / "c.tar.gz", batches)
    x_tr, y_tr, x_te, y_te = parse_cifar_tarball((tmp_path / "c.tar.gz").read_bytes(), "c.tar.gz")
    assert x_tr.shape == (20, 3, 32, 32) and x_te.shape == (6, 3, 32, 32)
    assert x_tr.dtype == np.float32 and y_tr.dtype == np.int64
    raw_train = np.concatenate([batches[b][0] for b in cifar.TRAIN_BATCHES])  # batches 1..5 in order
    np.testing.assert_array_equal(x_tr * 255.0, raw_train.reshape(20, 3, 32, 32).astype(np.float32))
    # cifar.html: per row, 1024 red values, then green, then blue, each 32 x 32 row-major
    n, c, h, w = 3, 2, 5, 17
    assert x_tr[n, c, h, w] == np.float32(raw_train[n, c * 1024 + h * 32 + w] / 255.0)
    assert y_tr.tolist() == [k % 10 for k in range(20)] and y_te.tolist() == [(20 + k) % 10 for k in range(6)]
    assert 0.0 <= x_tr.min() and x_tr.max() <= 1.0


def test_load_dataset_cifar10_from_a_small_tarball(tmp_path, monkeypatch):
    batches = make_batches(n_train=6, n_test=10)
    spec = write_tarball(tmp_path / "cifar-10" / "cifar-10-python.tar.gz", batches)
    monkeypatch.setattr(cifar, "CIFAR10", tiny_source(spec))
    ds = load_dataset(DataConfig(dataset="cifar10", val_fraction=0.2), root=tmp_path)
    i = ds.info
    assert (i.input_shape, i.num_classes, i.n_train, i.n_val, i.n_test) == ((3, 32, 32), 10, 24, 6, 10)
    assert ds.x_train.dtype == torch.float32 and ds.x_test.shape == (10, 3, 32, 32)
    assert torch.equal(ds.y_test, torch.arange(30, 40) % 10)  # the official test batch, in its order
    expected = torch.from_numpy(batches[cifar.TEST_BATCH][0].reshape(10, 3, 32, 32).astype(np.float32) / 255.0)
    assert torch.equal(ds.x_test, expected)
    again = load_dataset(DataConfig(dataset="cifar10", val_fraction=0.2), root=tmp_path)
    assert again.info.checksum == i.checksum and torch.equal(again.x_val, ds.x_val)


# --------------------------------------------------------------------------------------------------
# checksums first, restricted unpickling
# --------------------------------------------------------------------------------------------------
def test_wrong_checksum_refuses_before_the_archive_is_opened(tmp_path, monkeypatch):
    """A file under the real name that is not the official tarball: the pinned sha256 fails, tarfile and the
    unpickler are never reached, even though the archive holds a batch that would run code."""
    marker = tmp_path / "ran"
    write_tarball(tmp_path / "cifar-10" / "cifar-10-python.tar.gz", make_batches(),
                  members={"data_batch_1": pickle.dumps({b"data": _Hostile(marker)}, protocol=4)})
    opened = []
    monkeypatch.setattr(cifar.tarfile, "open", lambda *a, **k: opened.append(a) or pytest.fail("archive opened"))
    monkeypatch.setattr(cifar._BatchUnpickler, "load", lambda self: opened.append(self) or pytest.fail("unpickled"))
    monkeypatch.setenv("SPARSEBENCH_DATA", str(tmp_path))
    with pytest.raises(DatasetError, match=r"cifar-10/cifar-10-python\.tar\.gz: checksum mismatch \(sha256 of file [0-9a-f]{16}\.\.\., "
                                           r"expected 6d958be074577803\.\.\.\); delete it to download it again from "
                                           + OFFICIAL_URL.replace(".", r"\.") + "$") as e:
        load_dataset(DataConfig(dataset="cifar10"))
    _one_line(e)
    assert opened == [] and not marker.exists()


def test_hostile_batch_with_matching_checksum_is_refused_by_the_unpickler(tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    payload = pickle.dumps({b"data": _Hostile(marker), b"labels": []}, protocol=4)
    spec = write_tarball(tmp_path / "cifar-10" / "cifar-10-python.tar.gz", make_batches(), members={"data_batch_3": payload})
    monkeypatch.setattr(cifar, "CIFAR10", tiny_source(spec))
    with pytest.raises(DatasetError, match=r"cifar-10-python\.tar\.gz:cifar-10-batches-py/data_batch_3: not a CIFAR batch pickle "
                                           r"\(UnpicklingError: global \w+\.mkdir is not allowed in a CIFAR batch\)$") as e:
        load_dataset(DataConfig(dataset="cifar10"), root=tmp_path)
    _one_line(e)
    assert not marker.exists()
    pickle.loads(payload)  # the payload is real: a plain unpickler runs it
    assert marker.is_dir()


def test_official_sha256_is_pinned():
    spec = cifar.CIFAR10.files["archive"]
    assert spec.filename == "cifar-10-python.tar.gz" and not spec.compressed  # sha256 of the .tar.gz file itself
    assert spec.sha256_raw == "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
    assert spec.md5_gz == "c58f30108f718f92721af3b95e74349a"  # cifar.html
    assert cifar.CIFAR10.urls[0] + spec.filename == OFFICIAL_URL


# --------------------------------------------------------------------------------------------------
# damaged inputs whose checksum matches (a test archive): one-line errors naming the file
# --------------------------------------------------------------------------------------------------
def _bad_batch(**fields) -> bytes:
    data, labels = make_batches(n_train=4)[cifar.TRAIN_BATCHES[0]]
    return py2_pickle({b"data": fields.get("data", data), b"labels": fields.get("labels", labels)})


DAMAGED = {
    "label 10": ({"data_batch_2": _bad_batch(labels=[0, 1, 2, 10])}, r"data_batch_2: labels must be 0\.\.9, found 0\.\.10"),
    "too few labels": ({"data_batch_2": _bad_batch(labels=[0, 1])}, r"data_batch_2: 4 images but 'labels' has shape \(2,\)"),
    "wrong image size": ({"test_batch": _bad_batch(data=np.zeros((4, 1024), np.uint8))},
                         r"test_batch: 'data' must be a uint8 array of N x 3072 pixels, got uint8 \(4, 1024\)"),
    "no labels": ({"data_batch_5": py2_pickle({b"data": np.zeros((4, 3072), np.uint8)})},
                  r"data_batch_5: no 'data' and 'labels' in the batch \(keys: data\)"),
    "truncated pickle": ({"data_batch_1": _bad_batch()[:200]}, r"data_batch_1: not a CIFAR batch pickle \("),
    "not a dict": ({"data_batch_1": py2_pickle([1, 2])}, r"data_batch_1: a CIFAR batch is a dict, got list"),
}


@pytest.mark.parametrize("case", sorted(DAMAGED))
def test_damaged_batch_is_a_one_line_error(case, tmp_path):
    members, pattern = DAMAGED[case]
    write_tarball(tmp_path / "c.tar.gz", make_batches(), members=members)
    with pytest.raises(DatasetError, match=r"^c\.tar\.gz:cifar-10-batches-py/" + pattern) as e:
        parse_cifar_tarball((tmp_path / "c.tar.gz").read_bytes(), "c.tar.gz")
    _one_line(e)


def test_archive_without_a_batch_names_the_member(tmp_path):
    batches = make_batches()
    del batches[cifar.TEST_BATCH]
    write_tarball(tmp_path / "c.tar.gz", batches)
    with pytest.raises(DatasetError, match=r"^c\.tar\.gz: no file cifar-10-batches-py/test_batch in the archive$") as e:
        parse_cifar_tarball((tmp_path / "c.tar.gz").read_bytes(), "c.tar.gz")
    _one_line(e)


@pytest.mark.parametrize("damage", ["truncated", "not gzip"])
def test_unreadable_archive_with_matching_checksum_is_a_one_line_error(damage, tmp_path, monkeypatch):
    path = tmp_path / "cifar-10" / "cifar-10-python.tar.gz"
    write_tarball(path, make_batches())
    blob = path.read_bytes()[: len(path.read_bytes()) // 2] if damage == "truncated" else b"<html>404 not found</html>"
    path.write_bytes(blob)
    monkeypatch.setattr(cifar, "CIFAR10", tiny_source(RemoteFile(path.name, sha256_raw=hashlib.sha256(blob).hexdigest(),
                                                                 compressed=False)))
    with pytest.raises(DatasetError, match=r"cifar-10-python\.tar\.gz: not a readable \.tar\.gz archive \(.*\); "
                                           r"delete it to download it again$") as e:
        load_dataset(DataConfig(dataset="cifar10"), root=tmp_path)
    _one_line(e)


# --------------------------------------------------------------------------------------------------
# missing file, download (no network: file:// mirrors)
# --------------------------------------------------------------------------------------------------
def test_missing_archive_says_where_it_was_looked_for_and_where_to_get_it(tmp_path):
    with pytest.raises(DatasetError) as e:
        fetch_source(cifar.CIFAR10, "archive", tmp_path, download=False)
    assert _one_line(e) == f"{tmp_path}/cifar-10/cifar-10-python.tar.gz: missing (downloads are off); get it from {OFFICIAL_URL}"


def test_download_tries_mirrors_and_moves_only_a_verified_archive(tmp_path, monkeypatch):
    spec = write_tarball(tmp_path / "good" / "cifar-10-python.tar.gz", make_batches())
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "cifar-10-python.tar.gz").write_bytes(b"<html>not found</html>")
    urls = ("file:///nonexistent/", (tmp_path / "bad").as_uri() + "/", (tmp_path / "good").as_uri() + "/")
    monkeypatch.setattr(cifar, "CIFAR10", tiny_source(spec, urls))
    ds = load_dataset(DataConfig(dataset="cifar10", val_fraction=0.1), root=tmp_path / "cache")
    assert ds.info.n_test == 6
    assert [p.name for p in (tmp_path / "cache" / "cifar-10").iterdir()] == ["cifar-10-python.tar.gz"]  # no .part left


def test_download_failure_names_the_archive_every_source_and_the_folder(tmp_path, monkeypatch):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "cifar-10-python.tar.gz").write_bytes(b"<html>not found</html>")
    monkeypatch.setattr(cifar, "CIFAR10", dataclasses.replace(cifar.CIFAR10, urls=((tmp_path / "bad").as_uri() + "/",)))
    with pytest.raises(DatasetError, match=r"^cifar-10-python\.tar\.gz: download failed from every source \(.*checksum mismatch.*\); "
                                           rf"put the file in {tmp_path}/cache/cifar-10 or set SPARSEBENCH_DATA$") as e:
        load_dataset(DataConfig(dataset="cifar10"), root=tmp_path / "cache")
    _one_line(e)
    assert not list((tmp_path / "cache" / "cifar-10").iterdir())


def test_cifar10_is_registered():
    assert list_datasets("cifar") == ["cifar10"]
    assert list_datasets()[:3] == ["digits", "fashion_mnist", "mnist"]
