"""Files from their canonical sources: a local data root, download from mirrors in order, checksum before use.

Every file is verified: sha256 of the *decompressed* content where known (re-compressed copies of the same data
pass), else the md5 the dataset's authors publish for the `.gz`. A download lands under its real name only after
it passed its checksum (atomic rename), so a killed download never leaves half a file.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .types import DatasetError


@dataclass(frozen=True)
class RemoteFile:
    filename: str
    sha256_raw: str | None = None  # sha256 of the content: the decompressed bytes, or the file itself if not compressed
    md5_gz: str | None = None      # md5 of the file as stored (the .gz), as published by the dataset's authors
    compressed: bool = True        # a gzip file whose decompressed bytes are the content; False: the file is the content



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
