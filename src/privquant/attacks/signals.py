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
from scipy.special import log_softmax, logsumexp

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


# ---------------------------------------------------------------------------- per-model signals
# All functions map logits [..., classes] and labels [points] to an array without the class axis.
# Work in log space: a confident model's softmax underflows to exactly 1.0 in float32.


def _expand_labels(labels: np.ndarray, arr: np.ndarray) -> np.ndarray:
    """Labels shaped to index the class axis of ``arr`` ([..., points, (queries,) classes])."""
    shape = [1] * (arr.ndim - 1)
    shape[arr.ndim - 3 if arr.ndim >= 3 else 0] = len(labels)
    return labels.reshape(shape)[..., None]


def _true_class(arr: np.ndarray, labels: np.ndarray) -> np.ndarray:
    idx = np.broadcast_to(_expand_labels(labels, arr), arr.shape[:-1] + (1,))
    return np.take_along_axis(arr, idx, axis=-1)[..., 0]


def log_probs(logits: np.ndarray) -> np.ndarray:
    return log_softmax(logits.astype(np.float64), axis=-1)


def loss(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cross-entropy of the true class."""
    return -_true_class(log_probs(logits), labels)


def confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return np.exp(-loss(logits, labels))


def entropy(logits: np.ndarray) -> np.ndarray:
    lp = log_probs(logits)
    return -(np.exp(lp) * lp).sum(-1)


def modified_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Song & Mittal (2021): -(1-p_y) log p_y - sum_{i != y} p_i log(1 - p_i)."""
    lp = log_probs(logits)
    p = np.exp(lp)
    log1m = np.log1p(-np.minimum(p, 1 - 1e-12))
    lp_y, p_y = _true_class(lp, labels), _true_class(p, labels)
    others = -(p * log1m).sum(-1) + _true_class(p * log1m, labels)
    return -(1 - p_y) * lp_y + others


def scaled_logit(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """LiRA's statistic log(p_y / (1 - p_y)), computed stably from logits."""
    lp = log_probs(logits)
    lp_y = _true_class(lp, labels)
    mask = np.zeros_like(lp, dtype=bool)
    np.put_along_axis(
        mask, np.broadcast_to(_expand_labels(labels, lp), lp.shape[:-1] + (1,)), True, axis=-1
    )
    log_rest = logsumexp(np.where(mask, -np.inf, lp), axis=-1)
    return lp_y - log_rest


def correct(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """1.0 where the predicted class is the true one (the only thing a label-only attacker sees)."""
    return (logits.argmax(-1) == _expand_labels(labels, logits)[..., 0]).astype(np.float64)
