"""Per-model statistics attacks compute from logits (loss, confidence, entropy, LiRA's scaled logit).

All functions map logits [..., classes] and labels [points] to an array without the class axis.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax, logsumexp

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
