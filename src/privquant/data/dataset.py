"""The in-memory dataset every loader returns."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np


@dataclass
class Dataset:
    """Train and test arrays plus what a user needs to know about them.

    Images are uint8 ``[N, C, H, W]`` (kept as bytes so a whole dataset fits in memory and is
    indexed by a permutation); tabular features are float32 ``[N, F]``, already encoded.
    Labels are int64 ``[N]``.
    """

    name: str
    kind: Literal["image", "tabular"]
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list[str]
    source: str
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Checked where every loader ends, so no user file reaches training unverified: a NaN
        # feature or an out-of-range label trains to chance with no error otherwise.
        from privquant.errors import DatasetError

        where = self.source or self.name
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if len(x) != len(y):
                raise DatasetError(where, f"x_{split} has {len(x)} rows but y_{split} has {len(y)}")
            if len(x) == 0 and split == "train":  # audit_model may have no test rows
                raise DatasetError(where, "the train part is empty; expected at least one row")
            if np.issubdtype(x.dtype, np.floating):
                bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
                if bad.any():
                    raise DatasetError(where, f"x_{split}: {int(bad.sum())} rows hold NaN or "
                                              f"infinite values (first: row {int(np.argmax(bad))})")  # fmt: skip
            if not np.issubdtype(np.asarray(y).dtype, np.integer):
                raise DatasetError(
                    where, f"y_{split}: labels must be integers, got {np.asarray(y).dtype}"
                )
            if len(y) and (y.min() < 0 or y.max() >= len(self.classes)):
                raise DatasetError(where, f"y_{split}: labels must lie in 0..{len(self.classes) - 1} "
                                          f"({len(self.classes)} classes), got {int(y.min())}..{int(y.max())}")  # fmt: skip
        self.y_train = self.y_train.astype(np.int64, copy=False)
        self.y_test = self.y_test.astype(np.int64, copy=False)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def checksum(self) -> str:
        """sha256 over the decoded arrays: identifies the exact data, whatever the file format."""
        h = hashlib.sha256()
        for arr in (self.x_train, self.y_train, self.x_test, self.y_test):
            h.update(str(arr.dtype).encode() + str(arr.shape).encode())
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "train_size": len(self.y_train),
            "test_size": len(self.y_test),
            "input_shape": list(self.input_shape),
            "dtype": str(self.x_train.dtype),
            "num_classes": self.num_classes,
            "classes": self.classes,
            "source": self.source,
            "sha256": self.checksum,
            **({"extra": self.extra} if self.extra else {}),
        }


def seeded_subset(n: int, k: int, seed: int) -> np.ndarray:
    """Sorted positions of ``k`` of ``n`` rows drawn with ``seed`` (all when ``k >= n``).

    What every "some rows of this array" must use instead of the first ``k``: dataset files can
    be sorted by class (this CIFAR-10 copy and image folders are), so a prefix is a few classes.
    """
    return np.sort(np.random.default_rng(seed).permutation(n)[:k])
