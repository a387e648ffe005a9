"""The signals an audit needs: every model's outputs on every pool point, and who trained on what.

Attacks are functions of these arrays only, so adding an attack never retrains or re-queries.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from privquant.artifacts.atomic import atomic_path
from privquant.errors import PrivquantError

SIGNALS_HOW = (
    "an .npz with logits float32 [models, points, queries, classes], labels int64 [points], "
    "keep bool [models, points]"
)


@dataclass
class Signals:
    """``logits[m, i, q]``: model ``m``'s logits on point ``i`` under query view ``q`` (view 0 is
    the original input); ``labels[i]``: the point's true class; ``keep[m, i]``: True when point
    ``i`` was in model ``m``'s training set."""

    logits: np.ndarray
    labels: np.ndarray
    keep: np.ndarray
    _stats: dict[str, np.ndarray] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def statistic(
        self, name: str, fn: Callable[[np.ndarray, np.ndarray], np.ndarray]
    ) -> np.ndarray:
        """``fn(logits, labels)`` over all models, computed once per Signals object.

        Only logits-derived statistics are cached, never anything that depends on ``keep``.
        """
        if name not in self._stats:
            self._stats[name] = fn(self.logits, self.labels)
        return self._stats[name]

    def __post_init__(self) -> None:
        self.logits = np.asarray(self.logits, dtype=np.float32)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.keep = np.asarray(self.keep, dtype=bool)
        if self.logits.ndim == 3:  # no query views given: one query
            self.logits = self.logits[:, :, None, :]
        if self.logits.ndim != 4:
            raise PrivquantError(
                f"signals.logits: expected [models, points, queries, classes], got {self.logits.shape}"
            )
        m, n, _, c = self.logits.shape
        if self.labels.shape != (n,):
            raise PrivquantError(f"signals.labels: expected [{n}], got {self.labels.shape}")
        if self.keep.shape != (m, n):
            raise PrivquantError(f"signals.keep: expected [{m}, {n}], got {self.keep.shape}")
        if n and (self.labels.min() < 0 or self.labels.max() >= c):
            raise PrivquantError(f"signals.labels: values must lie in 0..{c - 1}")
        if not np.isfinite(self.logits).all():
            raise PrivquantError("signals.logits: contains NaN or infinity")

    @property
    def n_models(self) -> int:
        return self.logits.shape[0]

    @property
    def n_points(self) -> int:
        return self.logits.shape[1]

    @property
    def n_queries(self) -> int:
        return self.logits.shape[2]

    @property
    def n_classes(self) -> int:
        return self.logits.shape[3]

    def save(self, path: str | os.PathLike[str]) -> None:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, logits=self.logits, labels=self.labels, keep=self.keep)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Signals:
        path = Path(path)
        if not path.is_file():
            raise PrivquantError(f"{path}: signals file not found; expected {SIGNALS_HOW}")
        try:
            with np.load(path, allow_pickle=False) as z:
                missing = {"logits", "labels", "keep"} - set(z.files)
                if missing:
                    raise PrivquantError(
                        f"{path}: missing arrays {sorted(missing)}; expected {SIGNALS_HOW}"
                    )
                return cls(z["logits"], z["labels"], z["keep"])
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
            raise PrivquantError(
                f"{path}: not a readable .npz ({e}); expected {SIGNALS_HOW}"
            ) from e
        except PrivquantError as e:
            raise PrivquantError(f"{path}: {e}") from e
