"""CIFAR-10/100 from the official python-pickle archives, and any image-folder layout."""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from privquant.data.archive import safe_extract
from privquant.data.dataset import Dataset
from privquant.data.paths import cache_dir
from privquant.errors import DatasetError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}

CIFAR_HOW = {
    "cifar10": "download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html "
    "into $PRIVQUANT_DATA (or `privquant data fetch cifar10` when online), or provide the "
    "image-folder layout <root>/{train,test}/<class>/*.png as $PRIVQUANT_DATA/cifar10-jpeg",
    "cifar100": "download cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html "
    "into $PRIVQUANT_DATA (or `privquant data fetch cifar100` when online)",
}
CIFAR_URLS = {
    "cifar10": (
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a",
    ),
    "cifar100": (
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85",
    ),
}
_LAYOUT = {
    "cifar10": {
        "dir": "cifar-10-batches-py",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "meta": "batches.meta",
        "labels": b"labels",
        "names": b"label_names",
    },
    "cifar100": {
        "dir": "cifar-100-python",
        "train": ["train"],
        "test": ["test"],
        "meta": "meta",
        "labels": b"fine_labels",
        "names": b"fine_label_names",
    },
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a CIFAR batch cannot run code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):  # noqa: ANN201
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


def _unpickle(data: bytes, where: str, how: str) -> dict:
    try:
        obj = _ArrayOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:  # any failure here means a corrupt or hostile file
        raise DatasetError(where, f"not a valid CIFAR python batch ({e})", how) from e
    if not isinstance(obj, dict):
        raise DatasetError(where, f"expected a dict batch, got {type(obj).__name__}", how)
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def load_cifar_pickle(name: str, path: Path) -> Dataset:
    """Load from ``cifar-*-python.tar.gz`` or its extracted folder, without extracting to disk."""
    layout, how = _LAYOUT[name], CIFAR_HOW[name]
    path = Path(path)
    files: dict[str, bytes] = {}
    wanted = [*layout["train"], *layout["test"], layout["meta"]]
    if path.is_dir():
        base = path / layout["dir"] if (path / layout["dir"]).is_dir() else path
        for f in wanted:
            if not (base / f).is_file():
                raise DatasetError(base / f, f"missing {name} batch file", how)
            files[f] = (base / f).read_bytes()
    else:
        try:
            with tarfile.open(path) as tf:
                for f in wanted:
                    try:
                        member = tf.extractfile(f"{layout['dir']}/{f}")
                    except KeyError:
                        member = None
                    if member is None:
                        raise DatasetError(path, f"archive has no member {layout['dir']}/{f}", how)
                    files[f] = member.read()
        except (tarfile.TarError, EOFError, OSError) as e:
            raise DatasetError(path, f"archive is truncated or corrupt ({e})", how) from e
    meta = _unpickle(files[layout["meta"]], f"{path}:{layout['meta']}", how)
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta[layout["names"].decode()]]

    def split(parts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for f in parts:
            b = _unpickle(files[f], f"{path}:{f}", how)
            try:
                x = np.asarray(b["data"], dtype=np.uint8)
                y = np.asarray(b[layout["labels"].decode()], dtype=np.int64)
            except KeyError as e:
                raise DatasetError(f"{path}:{f}", f"batch lacks key {e}", how) from e
            if x.ndim != 2 or x.shape[1] != 3072 or len(x) != len(y):
                raise DatasetError(
                    f"{path}:{f}",
                    f"expected data [N, 3072] and N labels, got {x.shape}, {y.shape}",
                    how,
                )
            xs.append(x.reshape(-1, 3, 32, 32))
            ys.append(y)
        return np.concatenate(xs), np.concatenate(ys)

    x_train, y_train = split(layout["train"])
    x_test, y_test = split(layout["test"])
    for y, where in ((y_train, "train"), (y_test, "test")):
        if y.min() < 0 or y.max() >= len(names):
            raise DatasetError(path, f"{where} labels outside 0..{len(names) - 1}", how)
    return Dataset(name, "image", x_train, y_train, x_test, y_test, names, str(path.resolve()),
                   extra={"format": "python-pickle"})  # fmt: skip


def _image_split_root(root: Path) -> Path | None:
    """The folder holding ``train/`` and ``test/``: ``root`` itself or its single child."""
    if (root / "train").is_dir():
        return root
    children = [c for c in root.iterdir() if c.is_dir()] if root.is_dir() else []
    if len(children) == 1 and (children[0] / "train").is_dir():
        return children[0]
    return None


def load_image_folder(path: Path, name: str | None = None, how: str | None = None) -> Dataset:
    """Load ``<root>/{train,test}/<class>/<image>`` (or a .tar.gz/.zip of it).

    Classes are the sorted sub-folder names of ``train``; every image must have the same size
    and mode as the first one. An archive is extracted safely into the cache once.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    how = how or "provide <root>/train/<class>/*.png and <root>/test/<class>/*.png"
    if path.is_file():
        # Keyed on the archive's path and state, not its stem: one/imgs.tar.gz and
        # two/imgs.zip are different data, and a rewritten archive is extracted again.
        st = path.stat()
        key = hashlib.sha256(
            f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()
        ).hexdigest()[:16]
        extracted = cache_dir() / "extracted" / f"{path.name.split('.')[0]}-{key}"
        if not extracted.is_dir():
            safe_extract(path, extracted)
        path_root = _image_split_root(extracted)
    elif path.is_dir():
        path_root = _image_split_root(path)
    else:
        raise DatasetError(path, "image folder not found", how)
    if path_root is None:
        raise DatasetError(
            path, "expected sub-folders train/ and test/, each with one folder per class", how
        )
    train_dir, test_dir = path_root / "train", path_root / "test"
    if not test_dir.is_dir():
        raise DatasetError(test_dir, "missing test/ folder", how)
    classes = sorted(c.name for c in train_dir.iterdir() if c.is_dir())
    if not classes:
        raise DatasetError(train_dir, "no class folders", how)

    ref: dict[str, object] = {}

    def read_split(d: Path) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for c in sorted(x.name for x in d.iterdir() if x.is_dir()):
            if c not in classes:
                raise DatasetError(
                    d / c, f"class folder not present in train/ (classes: {classes})", how
                )
            for f in sorted((d / c).iterdir()):
                if f.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                try:
                    with Image.open(f) as im:
                        im.load()
                        if "mode" not in ref:
                            ref["mode"] = "L" if im.mode in ("L", "1", "I;16") else "RGB"
                            ref["size"] = im.size
                        arr = np.asarray(im.convert(ref["mode"]))
                        size = im.size
                except (UnidentifiedImageError, OSError) as e:
                    raise DatasetError(f, f"cannot decode image ({e})", how) from e
                if size != ref["size"]:
                    raise DatasetError(
                        f,
                        f"image is {size[0]}x{size[1]}, expected {ref['size'][0]}x{ref['size'][1]} like the first image",
                        how,
                    )
                xs.append(arr)
                ys.append(classes.index(c))
        if not xs:
            raise DatasetError(d, "no images found", how)
        x = np.stack(xs)
        x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x), np.asarray(ys, dtype=np.int64)

    x_train, y_train = read_split(train_dir)
    x_test, y_test = read_split(test_dir)
    return Dataset(name or path_root.name, "image", x_train, y_train, x_test, y_test, classes,
                   str(path.resolve()), extra={"format": "image-folder"})  # fmt: skip
