"""ROC quantities computed exactly from the empirical curve (no interpolation)."""

from __future__ import annotations

import numpy as np


def roc_curve(scores: np.ndarray, members: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FPR, TPR and thresholds for the rule ``score >= threshold``, one point per distinct score.

    Starts at (0, 0) with threshold +inf and ends at (1, 1).
    """
    scores = np.asarray(scores, dtype=np.float64)
    members = np.asarray(members, dtype=bool)
    order = np.argsort(-scores, kind="mergesort")
    s, m = scores[order], members[order]
    distinct = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # last index of each tie group
    tp = np.cumsum(m)[distinct]
    fp = np.cumsum(~m)[distinct]
    n_pos, n_neg = max(int(m.sum()), 1), max(int((~m).sum()), 1)
    fpr = np.r_[0.0, fp / n_neg]
    tpr = np.r_[0.0, tp / n_pos]
    thr = np.r_[np.inf, s[distinct]]
    return fpr, tpr, thr


def auc(scores: np.ndarray, members: np.ndarray) -> float:
    """Area under the ROC curve (ties count one half), via the trapezoid on the exact curve."""
    fpr, tpr, _ = roc_curve(scores, members)
    return float(np.trapezoid(tpr, fpr))


def tpr_at_fpr(scores: np.ndarray, members: np.ndarray, fpr_target: float) -> float:
    """Highest TPR over thresholds whose empirical FPR is <= ``fpr_target``.

    With n non-members the smallest non-zero FPR is 1/n; below that this is TPR at zero false
    positives. No interpolation between ROC points, so the value is achievable, not optimistic.
    """
    fpr, tpr, _ = roc_curve(scores, members)
    ok = fpr <= fpr_target + 1e-12
    return float(tpr[ok].max())
