"""Users' own arrays (.npz) and scikit-learn's bundled digits."""

from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path

import numpy as np

from privquant.data.dataset import Dataset
from privquant.errors import DatasetError

NPZ_HOW = (
    "save it with np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...[, classes=...])"
)


def _as_images_or_features(x: np.ndarray, where: str) -> tuple[np.ndarray, str]:
    if x.ndim == 2:
        return x.astype(np.float32), "tabular"
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise DatasetError(
            where,
            f"expected [N, F], [N, H, W], [N, C, H, W] or [N, H, W, C], got {x.shape}",
            NPZ_HOW,
        )
    if x.shape[1] not in (1, 3) and x.shape[-1] in (1, 3):
        x = x.transpose(0, 3, 1, 2)  # NHWC -> NCHW
    if x.size == 0:  # an empty part: the dataset's own check says so, naming the part
        return np.zeros(x.shape, np.uint8), "image"
    if x.dtype != np.uint8:
        if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
            bad = int((~np.isfinite(x.reshape(len(x), -1))).any(axis=1).sum())
            raise DatasetError(where, f"{bad} images hold NaN or infinite pixels", NPZ_HOW)
        lo, hi = float(x.min()), float(x.max())
        # Floats in [0, 1] (a rounding error above 1 included) are scaled; whole numbers in
        # 0..255 are bytes already; anything else is ambiguous and refused, never truncated.
        if np.issubdtype(x.dtype, np.floating) and lo >= -1e-3 and hi <= 1 + 1e-3:
            x = np.round(np.clip(x, 0, 1) * 255)
        elif lo < 0 or hi > 255 or not np.array_equal(x, np.round(x)):
            raise DatasetError(
                where,
                f"image values span {lo:g}..{hi:g}: expected uint8, whole numbers in 0..255, or floats "
                "in [0, 1]",
                NPZ_HOW,
            )
        x = x.astype(np.uint8)
    return np.ascontiguousarray(x), "image"


def load_npz(path: Path) -> Dataset:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(path, "file not found", NPZ_HOW)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DatasetError(path, f"not a readable .npz file ({e})", NPZ_HOW) from e
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays]
    if missing:
        raise DatasetError(path, f"missing arrays {missing}; found {sorted(arrays)}", NPZ_HOW)
    x_train, kind = _as_images_or_features(arrays["x_train"], f"{path}:x_train")
    x_test, kind_test = _as_images_or_features(arrays["x_test"], f"{path}:x_test")
    if kind != kind_test or x_train.shape[1:] != x_test.shape[1:]:
        raise DatasetError(
            path, f"x_train {x_train.shape} and x_test {x_test.shape} differ in shape", NPZ_HOW
        )
    y_train, y_test = arrays["y_train"], arrays["y_test"]
    if len(x_test) == 0:
        raise DatasetError(
            f"{path}:x_test", "the test part is empty; expected at least one row", NPZ_HOW
        )
    for key, y in (("y_train", y_train), ("y_test", y_test)):
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
            raise DatasetError(
                f"{path}:{key}",
                f"expected non-negative integer labels [N], got {y.dtype} {y.shape}",
                NPZ_HOW,
            )
    n_classes = 1 + int(max((y.max() for y in (y_train, y_test) if len(y)), default=0))
    classes = (
        [str(c) for c in arrays["classes"]]
        if "classes" in arrays
        else [str(i) for i in range(n_classes)]
    )
    if len(classes) < n_classes:
        raise DatasetError(
            f"{path}:classes",
            f"{len(classes)} class names for labels up to {n_classes - 1}",
            NPZ_HOW,
        )
    return Dataset(path.stem, kind, x_train, y_train, x_test, y_test, classes, str(path.resolve()))  # type: ignore[arg-type]


def load_digits(test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """scikit-learn's 8x8 digits (1,797 images) as uint8 images, with a seeded test split."""
    table = _digits_table()
    x = np.round(table[:, :64].reshape(-1, 8, 8) * (255.0 / 16.0)).astype(np.uint8)[:, None]
    y = table[:, 64].astype(np.int64)
    perm = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(test_fraction * len(y)))
    te, tr = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    return Dataset("digits", "image", x[tr], y[tr], x[te], y[te], [str(i) for i in range(10)],
                   "sklearn.datasets.load_digits", extra={"split_seed": seed})  # fmt: skip


def _digits_table() -> np.ndarray:
    """The digits as scikit-learn ships them: [1797, 65] (64 pixels in 0-16, then the label).

    Read from sklearn's data file without importing sklearn, whose import (~2 s) cost a small
    digits run in a fresh process more than its training; its own loader where the file is not
    where sklearn has kept it."""
    spec = importlib.util.find_spec("sklearn")
    origin = Path(spec.origin) if spec is not None and spec.origin else None
    path = origin.parent / "datasets" / "data" / "digits.csv.gz" if origin else None
    if path is None or not path.is_file():
        from sklearn.datasets import load_digits as _load

        d = _load()
        return np.column_stack([d.data, d.target])
    return np.loadtxt(path, delimiter=",")
