"""Tiny ImageNet on small zips the test writes in the layout of tiny-imagenet-200.zip (the real one is not on this
machine): images and labels as loaded (sorted wnids, the labeled val split as the test split, grayscale made RGB),
the md5 checked before the archive is opened, only train/ and val/ read, and every damaged input a one-line error."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import random
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sparsebench.methods.data.sources.tiny_imagenet as tiny
from sparsebench.methods import DataConfig, DatasetError, list_datasets, load_dataset
from sparsebench.methods.data import RemoteFile, fetch_source
from sparsebench.methods.data.sources.tiny_imagenet import parse_tiny_imagenet_zip

OFFICIAL_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
WNIDS = ["n03000000", "n01000000", "n02000000"]  # listed unsorted, as the real wnids.txt is
SORTED = sorted(WNIDS)


def jpeg(pixels: np.ndarray, **save) -> bytes:
    """JPEG bytes of a uint8 (64, 64, 3) RGB or (64, 64) grayscale image, near-lossless."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=100, subsampling=0, **save)
    return buf.getvalue()


def color(wnid: str, k: int) -> tuple[int, int, int]:
    """A flat colour naming the class (red) and the image (green); blue fixed, so that channel order shows."""
    return 40 + 60 * SORTED.index(wnid), 20 + 25 * k, 200


def flat(rgb) -> bytes:
    return jpeg(np.broadcast_to(np.array(rgb, np.uint8), (64, 64, 3)).copy())


# val images: file -> wnid, in an order that is not the sorted one (val_10 sorts before val_2)
VAL = {"val_2.JPEG": "n02000000", "val_0.JPEG": "n03000000", "val_10.JPEG": "n01000000", "val_1.JPEG": "n01000000"}


def layout(n_train: int = 3) -> dict[str, bytes]:
    """Members (relative to tiny-imagenet-200/) of a small archive with the real layout."""
    m = {"wnids.txt": ("\n".join(WNIDS) + "\n").encode(),
         "words.txt": "".join(f"{w}\tthing {w}\n" for w in WNIDS).encode(),
         "test/images/test_0.JPEG": b"never read: the test split is unlabeled"}
    for w in WNIDS:
        m[f"train/{w}/{w}_boxes.txt"] = "".join(f"{w}_{k}.JPEG\t0\t0\t63\t63\n" for k in range(n_train)).encode()
        for k in range(n_train):
            m[f"train/{w}/images/{w}_{k}.JPEG"] = flat(color(w, k))
    for i, (file, w) in enumerate(VAL.items()):
        m[f"val/images/{file}"] = flat(color(w, 5 + i))
    m["val/val_annotations.txt"] = "".join(f"{f}\t{w}\t0\t0\t63\t63\n" for f, w in VAL.items()).encode()
    return m


def write_zip(path: Path, members: dict[str, bytes], shuffle: int | None = None) -> RemoteFile:
    """A zip of `members` under tiny-imagenet-200/ (with directory entries, as the real one has), in insertion
    order or shuffled by `shuffle`. Returns the file with its real md5, the kind of checksum the real source pins."""
    names = list(members)
    if shuffle is not None:
        random.Random(shuffle).shuffle(names)
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("tiny-imagenet-200/", b"")
        for name in names:
            zf.writestr("tiny-imagenet-200/" + name, members[name])
    return RemoteFile(path.name, md5_gz=hashlib.md5(path.read_bytes()).hexdigest(), compressed=False)


def tiny_source(spec: RemoteFile, urls=()):
    return dataclasses.replace(tiny.TINY_IMAGENET, urls=urls, files={"archive": spec})


def parse(tmp_path, members, **kw):
    write_zip(tmp_path / "t.zip", members, **kw)
    return parse_tiny_imagenet_zip((tmp_path / "t.zip").read_bytes(), "t.zip")


def _one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


def near(x: np.ndarray, rgb) -> bool:
    """A decoded flat image has the colour (JPEG at quality 100: within 2/255 per pixel)."""
    return bool(np.abs(x - np.array(rgb, np.float32)[:, None, None] / 255.0).max() <= 2 / 255)


# --------------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------------
def test_zip_round_trip_sorted_wnids_channels_first(tmp_path):
    x_tr, y_tr, x_te, y_te = parse(tmp_path, layout())
    assert x_tr.shape == (9, 3, 64, 64) and x_te.shape == (4, 3, 64, 64)
    assert x_tr.dtype == x_te.dtype == np.float32 and y_tr.dtype == y_te.dtype == np.int64
    assert 0.0 <= x_tr.min() and x_tr.max() <= 1.0 and 0.0 <= x_te.min() and x_te.max() <= 1.0
    # label = index in the sorted wnids (not the wnids.txt order); members in sorted name order
    assert y_tr.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for i, (y, k) in enumerate(zip(y_tr, [0, 1, 2] * 3)):
        assert near(x_tr[i], color(SORTED[y], k)), i  # red names the class, green the image, blue is 200
    # exactly Pillow's decoding of the member, as RGB, channels first, / 255
    with zipfile.ZipFile(tmp_path / "t.zip") as zf:
        raw = zf.read(f"tiny-imagenet-200/train/{SORTED[1]}/images/{SORTED[1]}_2.JPEG")
    expected = np.asarray(Image.open(io.BytesIO(raw)).convert("RGB")).transpose(2, 0, 1).astype(np.float32) / 255.0
    np.testing.assert_array_equal(x_tr[5], expected)


def test_rows_and_columns_keep_their_place(tmp_path):
    pixels = np.zeros((64, 64, 3), np.uint8)
    pixels[:, 32:, 0] = 255  # red on the right half
    pixels[48:, :, 2] = 255  # blue on the bottom quarter
    members = layout(n_train=1)
    members[f"train/{SORTED[0]}/images/{SORTED[0]}_0.JPEG"] = jpeg(pixels)
    x = parse(tmp_path, members)[0][0]  # (3, 64, 64): channel, row, column
    assert x[0, :, :32].max() <= 2 / 255 and x[0, :, 32:].min() >= 253 / 255
    assert x[2, :48].max() <= 2 / 255 and x[2, 48:].min() >= 253 / 255
    assert x[1].max() <= 2 / 255


def test_grayscale_jpeg_becomes_three_equal_channels(tmp_path):
    gray = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (64, 1))  # a horizontal ramp
    members = layout(n_train=2)
    members[f"train/{SORTED[2]}/images/{SORTED[2]}_1.JPEG"] = jpeg(gray)
    assert Image.open(io.BytesIO(jpeg(gray))).mode == "L"  # really a one-channel JPEG
    x_tr, y_tr, _, _ = parse(tmp_path, members)
    g = x_tr[5]
    assert y_tr[5] == 2 and g.shape == (3, 64, 64)
    assert np.array_equal(g[0], g[1]) and np.array_equal(g[1], g[2])
    assert np.abs(g[0] - gray / 255.0).max() <= 2 / 255
    assert not np.array_equal(x_tr[4][0], x_tr[4][2])  # the colour images beside it keep their channels


def test_test_split_is_val_labelled_by_its_annotations(tmp_path):
    _, _, x_te, y_te = parse(tmp_path, layout())
    files = sorted(VAL)  # sorted member order: val_0, val_1, val_10, val_2
    assert files == ["val_0.JPEG", "val_1.JPEG", "val_10.JPEG", "val_2.JPEG"]
    assert y_te.tolist() == [SORTED.index(VAL[f]) for f in files] == [2, 0, 0, 1]
    order = list(VAL)  # colours were given in VAL's (unsorted) order
    for i, f in enumerate(files):
        assert near(x_te[i], color(VAL[f], 5 + order.index(f))), f


def test_result_does_not_depend_on_member_order_in_the_zip(tmp_path):
    a = parse(tmp_path, layout())
    b = parse(tmp_path, layout(), shuffle=7)
    for u, v in zip(a, b):
        assert np.array_equal(u, v)


def test_load_dataset_through_the_entry_point(tmp_path, monkeypatch):
    spec = write_zip(tmp_path / "tiny-imagenet" / "tiny-imagenet-200.zip", layout(n_train=4))
    monkeypatch.setattr(tiny, "TINY_IMAGENET", tiny_source(spec))
    monkeypatch.setenv("SPARSEBENCH_DATA", str(tmp_path))
    ds = load_dataset(DataConfig(dataset="tiny_imagenet", val_fraction=0.25))
    i = ds.info
    assert (i.input_shape, i.num_classes, i.n_train, i.n_val, i.n_test) == ((3, 64, 64), 3, 9, 3, 4)
    assert ds.x_train.dtype == torch.float32 and ds.x_test.shape == (4, 3, 64, 64)
    assert ds.y_test.tolist() == [2, 0, 0, 1]  # val, in sorted member order
    assert "val split" in i.source and "sorted wnids.txt" in i.source and "tiny-imagenet-200.zip" in i.source
    again = load_dataset(DataConfig(dataset="tiny_imagenet", val_fraction=0.25))
    assert again.info.checksum == i.checksum and torch.equal(again.x_val, ds.x_val)


def test_only_wnids_train_and_val_are_read(tmp_path):
    members = layout()
    members["test/images/test_1.JPEG"] = b"\xff\xd8 not a jpeg"
    members["words.txt"] = b"\xff\xfe not utf-8"
    members["extra/huge.bin"] = bytes(2 * tiny.MAX_TEXT_BYTES)
    write_zip(tmp_path / "t.zip", members)
    read = []
    real_read = zipfile.ZipFile.read

    def spy(self, name, *a, **k):
        read.append(name if isinstance(name, str) else name.filename)
        return real_read(self, name, *a, **k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(zipfile.ZipFile, "read", spy)
        x_tr, _, x_te, _ = parse_tiny_imagenet_zip((tmp_path / "t.zip").read_bytes(), "t.zip")
    assert len(x_tr) == 9 and len(x_te) == 4
    assert read and all(n == "tiny-imagenet-200/wnids.txt" or n == "tiny-imagenet-200/val/val_annotations.txt"
                        or n.startswith(("tiny-imagenet-200/train/", "tiny-imagenet-200/val/images/")) for n in read)
    assert not any(n.endswith("_boxes.txt") for n in read)


# --------------------------------------------------------------------------------------------------
# checksum first
# --------------------------------------------------------------------------------------------------
def test_official_md5_is_pinned():
    spec = tiny.TINY_IMAGENET.files["archive"]
    assert spec.filename == "tiny-imagenet-200.zip" and not spec.compressed  # md5 of the .zip file itself
    assert spec.md5_gz == "90528d7ca1a48142e341f4ef8d21d0de" and spec.sha256_raw is None
    assert tiny.TINY_IMAGENET.urls[0] + spec.filename == OFFICIAL_URL


def test_wrong_checksum_refuses_before_the_archive_is_opened(tmp_path, monkeypatch):
    write_zip(tmp_path / "tiny-imagenet" / "tiny-imagenet-200.zip", layout())
    opened = []
    monkeypatch.setattr(tiny.zipfile, "ZipFile", lambda *a, **k: opened.append(a) or pytest.fail("archive opened"))
    monkeypatch.setenv("SPARSEBENCH_DATA", str(tmp_path))
    with pytest.raises(DatasetError, match=r"tiny-imagenet/tiny-imagenet-200\.zip: checksum mismatch \(md5 [0-9a-f]{32}, "
                                           r"expected 90528d7ca1a48142e341f4ef8d21d0de\); delete it to download it again "
                                           r"from " + OFFICIAL_URL.replace(".", r"\.") + "$") as e:
        load_dataset(DataConfig(dataset="tiny_imagenet"))
    _one_line(e)
    assert opened == []


def test_missing_archive_says_where_it_was_looked_for_and_where_to_get_it(tmp_path):
    with pytest.raises(DatasetError) as e:
        fetch_source(tiny.TINY_IMAGENET, "archive", tmp_path, download=False)
    assert _one_line(e) == f"{tmp_path}/tiny-imagenet/tiny-imagenet-200.zip: missing (downloads are off); get it from {OFFICIAL_URL}"


def test_download_tries_mirrors_and_moves_only_a_verified_archive(tmp_path, monkeypatch):
    spec = write_zip(tmp_path / "good" / "tiny-imagenet-200.zip", layout())
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "tiny-imagenet-200.zip").write_bytes(b"<html>not found</html>")
    urls = ("file:///nonexistent/", (tmp_path / "bad").as_uri() + "/", (tmp_path / "good").as_uri() + "/")
    monkeypatch.setattr(tiny, "TINY_IMAGENET", tiny_source(spec, urls))
    ds = load_dataset(DataConfig(dataset="tiny_imagenet", val_fraction=0.2), root=tmp_path / "cache")
    assert ds.info.n_test == 4
    assert [p.name for p in (tmp_path / "cache" / "tiny-imagenet").iterdir()] == ["tiny-imagenet-200.zip"]  # no .part


# --------------------------------------------------------------------------------------------------
# damaged archives whose checksum matches (a test archive): one-line errors naming the file and the member
# --------------------------------------------------------------------------------------------------
def _without(*names):
    m = layout()
    for n in names:
        del m[n]
    return m


A_TRAIN = f"train/{SORTED[1]}/images/{SORTED[1]}_1.JPEG"
RETRY = "; delete the archive to download it again$"
GOOD = flat((1, 2, 3))
NOISE = jpeg(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))  # its scan is most of the file
DAMAGED = {
    "corrupt jpeg": ({A_TRAIN: b"\xff\xd8\xff\xe0 garbage"}, rf"^t\.zip:tiny-imagenet-200/{A_TRAIN}: not a JPEG image \(.+\){RETRY}"),
    "truncated jpeg": ({A_TRAIN: NOISE[: len(NOISE) // 2]}, rf"^t\.zip:tiny-imagenet-200/{A_TRAIN}: not a decodable JPEG \(OSError: .*truncated.*\){RETRY}"),
    "png, not jpeg": ({A_TRAIN: (lambda b: (Image.new("RGB", (64, 64)).save(b, "PNG"), b.getvalue())[1])(io.BytesIO())},
                      rf"^t\.zip:tiny-imagenet-200/{A_TRAIN}: not a JPEG image \(.+\){RETRY}"),
    "32x32 image": ({"val/images/val_1.JPEG": jpeg(np.zeros((32, 32, 3), np.uint8))},
                    rf"^t\.zip:tiny-imagenet-200/val/images/val_1\.JPEG: a 32x32 image, expected 64x64{RETRY}"),
    "unknown wnid in train": ({"train/n09999999/images/n09999999_0.JPEG": GOOD},
                              rf"^t\.zip:tiny-imagenet-200/train/n09999999/images/n09999999_0\.JPEG: wnid 'n09999999' is not in "
                              rf"tiny-imagenet-200/wnids\.txt{RETRY}"),
    "unknown wnid in val": ({"val/val_annotations.txt": b"val_0.JPEG\tn03000000\nval_1.JPEG\tn09999999\n"},
                            rf"^t\.zip:tiny-imagenet-200/val/val_annotations\.txt: line 2: wnid 'n09999999' is not in "
                            rf"tiny-imagenet-200/wnids\.txt{RETRY}"),
    "val image not annotated": ({"val/images/val_3.JPEG": GOOD},
                                rf"^t\.zip:tiny-imagenet-200/val/images/val_3\.JPEG: no label in tiny-imagenet-200/val/val_annotations\.txt{RETRY}"),
    "annotated image absent": ({"val/val_annotations.txt": "".join(f"{f}\t{w}\n" for f, w in {**VAL, "val_9.JPEG": WNIDS[0]}.items()).encode()},
                               rf"^t\.zip:tiny-imagenet-200/val/val_annotations\.txt: annotates tiny-imagenet-200/val/images/val_9\.JPEG, "
                               rf"which is not in the archive \(1 such\){RETRY}"),
    "annotated twice": ({"val/val_annotations.txt": "".join(f"{f}\t{w}\n" for f, w in [*VAL.items(), ("val_0.JPEG", WNIDS[1])]).encode()},
                        rf"^t\.zip:tiny-imagenet-200/val/val_annotations\.txt: line 5: 'val_0\.JPEG' is annotated twice{RETRY}"),
    "annotation line without wnid": ({"val/val_annotations.txt": b"val_0.JPEG n03000000\n"},
                                     rf"^t\.zip:tiny-imagenet-200/val/val_annotations\.txt: line 1 is not 'file<TAB>wnid\.\.\.' \('val_0\.JPEG n03000000'\){RETRY}"),
    "wnid listed twice": ({"wnids.txt": ("\n".join(WNIDS + [WNIDS[1]])).encode()},
                          rf"^t\.zip:tiny-imagenet-200/wnids\.txt: wnid 'n01000000' is listed twice{RETRY}"),
    "wnids not text": ({"wnids.txt": b"\xff\xfe\x00n"}, rf"^t\.zip:tiny-imagenet-200/wnids\.txt: not a text file \(UnicodeDecodeError: .+\){RETRY}"),
    "oversized member": ({A_TRAIN: bytes(tiny.MAX_IMAGE_BYTES + 1)},
                         rf"^t\.zip:tiny-imagenet-200/{A_TRAIN}: {tiny.MAX_IMAGE_BYTES + 1} bytes, more than the {tiny.MAX_IMAGE_BYTES} "
                         rf"such a member can have{RETRY}"),
}


@pytest.mark.parametrize("case", sorted(DAMAGED))
def test_damaged_member_is_a_one_line_error(case, tmp_path):
    replace, pattern = DAMAGED[case]
    members = layout()
    members.update(replace)
    with pytest.raises(DatasetError, match=pattern) as e:
        parse(tmp_path, members)
    _one_line(e)


@pytest.mark.parametrize("member", ["wnids.txt", "val/val_annotations.txt"])
def test_missing_index_file_names_the_member(member, tmp_path):
    with pytest.raises(DatasetError, match=rf"^t\.zip: no file tiny-imagenet-200/{re.escape(member)} in the archive; "
                                           r"delete it to download it again$") as e:
        parse(tmp_path, _without(member))
    _one_line(e)


def test_wnid_without_training_images_is_an_error(tmp_path):
    members = {k: v for k, v in layout().items() if not k.startswith(f"train/{SORTED[2]}/images/")}
    with pytest.raises(DatasetError, match=rf"^t\.zip: no training images under tiny-imagenet-200/train/{SORTED[2]}/images/ "
                                           rf"\(1 of the 3 wnids have none\); delete the archive to download it again$") as e:
        parse(tmp_path, members)
    _one_line(e)


def test_corrupt_member_data_is_an_error_naming_the_member(tmp_path):
    """A member whose stored bytes were damaged after zipping: zipfile's CRC check, reported as a one-line error."""
    path = tmp_path / "t.zip"
    write_zip(path, layout())
    blob = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("tiny-imagenet-200/" + A_TRAIN)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)  # local header, then the data
    blob[start + info.compress_size // 2] ^= 0xFF
    with pytest.raises(DatasetError, match=rf"^t\.zip:tiny-imagenet-200/{A_TRAIN}: unreadable member \(.+\){RETRY}") as e:
        parse_tiny_imagenet_zip(bytes(blob), "t.zip")
    _one_line(e)


@pytest.mark.parametrize("damage", ["truncated", "not a zip"])
def test_unreadable_archive_with_matching_checksum_is_a_one_line_error(damage, tmp_path, monkeypatch):
    path = tmp_path / "tiny-imagenet" / "tiny-imagenet-200.zip"
    write_zip(path, layout())
    blob = path.read_bytes()[: len(path.read_bytes()) // 2] if damage == "truncated" else b"<html>404 not found</html>"
    path.write_bytes(blob)
    monkeypatch.setattr(tiny, "TINY_IMAGENET", tiny_source(RemoteFile(path.name, md5_gz=hashlib.md5(blob).hexdigest(),
                                                                      compressed=False)))
    with pytest.raises(DatasetError, match=r"tiny-imagenet-200\.zip: not a readable \.zip archive \(.*\); "
                                           r"delete it to download it again$") as e:
        load_dataset(DataConfig(dataset="tiny_imagenet"), root=tmp_path)
    _one_line(e)


def test_tiny_imagenet_is_registered():
    assert list_datasets("tiny_imagenet") == ["tiny_imagenet"]
    assert list_datasets()[:3] == ["digits", "fashion_mnist", "mnist"]
    assert list_datasets().index("cifar10") < list_datasets().index("tiny_imagenet")  # the image sets stay together
