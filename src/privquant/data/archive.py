"""Checksums, downloads and archive extraction that cannot write outside their target."""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from privquant.artifacts.atomic import as_if_created
from privquant.errors import DatasetError


def file_digest(path: Path, algo: str = "sha256") -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, dest: Path, md5: str | None = None, timeout: float = 30.0) -> Path:
    """Download ``url`` to ``dest`` atomically, verifying ``md5`` when given."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    as_if_created(tmp_path)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp_path, "wb") as f:
            shutil.copyfileobj(r, f)
        if md5 is not None:
            got = file_digest(tmp_path, "md5")
            if got != md5:
                raise DatasetError(url, f"downloaded file has md5 {got}, expected {md5}")
        os.replace(tmp_path, dest)
    finally:
        tmp_path.unlink(missing_ok=True)
    return dest


def _check_member_path(target: Path, name: str, archive: Path) -> Path:
    dest = (target / name).resolve()
    if dest != target and target not in dest.parents:
        raise DatasetError(archive, f"archive member {name!r} would be written outside {target}")
    return dest


def safe_extract(archive: Path, target: Path) -> Path:
    """Extract a .tar(.gz|.bz2|.xz) or .zip into ``target`` and return it.

    Rejects absolute paths, ``..`` components, links and device files. Extraction happens in
    a temporary sibling folder that is renamed into place only once complete.
    """
    archive = Path(archive)
    if not archive.is_file():
        raise DatasetError(archive, "archive not found")
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    as_if_created(tmp)
    tmp_resolved = tmp.resolve()
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    _check_member_path(tmp_resolved, info.filename, archive)
                zf.extractall(tmp)
        else:
            try:
                tf = tarfile.open(archive)  # noqa: SIM115 (closed by the with below)
            except (tarfile.TarError, OSError) as e:
                raise DatasetError(archive, f"not a readable tar or zip archive ({e})") from e
            with tf:
                try:
                    members = tf.getmembers()
                except (tarfile.TarError, EOFError, OSError) as e:
                    raise DatasetError(archive, f"archive is truncated or corrupt ({e})") from e
                for m in members:
                    _check_member_path(tmp_resolved, m.name, archive)
                    if not (m.isfile() or m.isdir()):
                        raise DatasetError(
                            archive, f"archive member {m.name!r} is a link or special file"
                        )
                try:
                    tf.extractall(tmp, members=members, filter="data")
                except TypeError:  # Python without extraction filters; members already checked
                    tf.extractall(tmp, members=members)
                except (tarfile.TarError, EOFError, OSError) as e:
                    raise DatasetError(archive, f"archive is truncated or corrupt ({e})") from e
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
