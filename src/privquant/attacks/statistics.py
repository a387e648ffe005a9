"""Per-model statistics attacks compute from logits (loss, confidence, entropy, LiRA's scaled logit).

All functions map logits [..., classes] and labels [points] to an array without the class axis.
Everything that depends on the true-class probability p_y goes through the scaled logit
phi = log(p_y / (1 - p_y)) = z_y - logsumexp(z_{i != y}), computed from the raw logits: a
confident model's p_y rounds to exactly 1.0 (and log p_y to 0) once the margin passes ~38 in
float64, which would tie every confident member; phi keeps full resolution.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax, logsumexp


def _expand_labels(labels: np.ndarray, arr: np.ndarray) -> np.ndarray:
    """Labels shaped to index the class axis of ``arr`` ([..., points, (queries,) classes])."""
    shape = [1] * (arr.ndim - 1)
    shape[arr.ndim - 3 if arr.ndim >= 3 else 0] = len(labels)
    return labels.reshape(shape)[..., None]


def _label_index(labels: np.ndarray, arr: np.ndarray) -> np.ndarray:
    return np.broadcast_to(_expand_labels(labels, arr), arr.shape[:-1] + (1,))


def _true_class(arr: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return np.take_along_axis(arr, _label_index(labels, arr), axis=-1)[..., 0]


def log_probs(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    return log_softmax(logits.astype(np.float64) / temperature, axis=-1)


def scaled_logit(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """LiRA's statistic phi = log(p_y / (1 - p_y)), exact for any margin."""
    z = logits.astype(np.float64) / temperature
    z_y = _true_class(z, labels)
    others = z.copy()
    np.put_along_axis(others, _label_index(labels, z), -np.inf, axis=-1)
    return z_y - logsumexp(others, axis=-1)


def log_confidence(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """log p_y = -softplus(-phi): about -exp(-phi) for confident members, never rounded to 0."""
    return -np.logaddexp(0.0, -scaled_logit(logits, labels, temperature))


def loss(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cross-entropy of the true class, softplus(-phi) (tiny but non-zero for confident members)."""
    return np.logaddexp(0.0, -scaled_logit(logits, labels))


def confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """p_y. For ranking, prefer :func:`scaled_logit` (monotone in p_y, never saturates)."""
    return np.exp(log_confidence(logits, labels))


def entropy(logits: np.ndarray) -> np.ndarray:
    lp = log_probs(logits)
    return -(np.exp(lp) * lp).sum(-1)


def modified_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Song & Mittal (2021): -(1-p_y) log p_y - sum_{i != y} p_i log(1 - p_i), in stable form.

    log(1 - p_i) for the one class that can exceed 1/2 (the argmax) is computed as the
    log-sum of the other classes' probabilities, so a confident model keeps full resolution.
    """
    z = logits.astype(np.float64)
    lp = log_softmax(z, axis=-1)
    p = np.exp(lp)
    log1m = np.log1p(-np.minimum(p, 0.5))  # exact for every class with p_i <= 1/2
    top = z.argmax(-1)[..., None]
    rest = z.copy()
    np.put_along_axis(rest, top, -np.inf, axis=-1)
    log1m_top = logsumexp(rest, axis=-1) - logsumexp(z, axis=-1)
    np.put_along_axis(log1m, top, log1m_top[..., None], axis=-1)
    phi = scaled_logit(logits, labels)
    one_minus_py = np.exp(-np.logaddexp(0.0, phi))  # sigmoid(-phi)
    lp_y = -np.logaddexp(0.0, -phi)
    others = -(p * log1m).sum(-1) + _true_class(p * log1m, labels)
    return -one_minus_py * lp_y + others


def correct(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """1.0 where the predicted class is the true one (the only thing a label-only attacker sees)."""
    return (logits.argmax(-1) == _expand_labels(labels, logits)[..., 0]).astype(np.float64)
