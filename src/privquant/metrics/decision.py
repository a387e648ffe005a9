"""Metrics of hard member/non-member decisions, as the Famili & Lao paper reports them."""

from __future__ import annotations

import numpy as np


def decision_metrics(predicted: np.ndarray, members: np.ndarray) -> dict[str, float]:
    """Accuracy, balanced accuracy, precision/recall/F1 for members and for non-members,
    TPR, FPR and membership advantage (TPR - FPR)."""
    predicted = np.asarray(predicted, dtype=bool)
    members = np.asarray(members, dtype=bool)
    return confusion_metrics(
        tp=float((predicted & members).sum()),
        fp=float((predicted & ~members).sum()),
        fn=float((~predicted & members).sum()),
        tn=float((~predicted & ~members).sum()),
    )


def confusion_metrics(tp: float, fp: float, fn: float, tn: float) -> dict[str, float]:
    """The metrics of :func:`decision_metrics` from (possibly weighted) confusion counts."""

    def ratio(a: float, b: float) -> float:
        return a / b if b > 0 else 0.0

    precision, recall = ratio(tp, tp + fp), ratio(tp, tp + fn)
    npv, tnr = ratio(tn, tn + fn), ratio(tn, tn + fp)
    return {
        "accuracy": ratio(tp + tn, tp + tn + fp + fn),
        "balanced_accuracy": 0.5 * (recall + tnr),
        "precision": precision,
        "recall": recall,
        "f1": ratio(2 * precision * recall, precision + recall),
        "nonmember_precision": npv,
        "nonmember_recall": tnr,
        "nonmember_f1": ratio(2 * npv * tnr, npv + tnr),
        "tpr": recall,
        "fpr": 1.0 - tnr,
        "advantage": recall - (1.0 - tnr),
    }


def best_threshold(scores: np.ndarray, members: np.ndarray) -> float:
    """Threshold maximizing balanced accuracy of ``score >= t`` (used on shadow data only).

    The cut is placed midway between the optimal score and the next lower one, not on the
    optimal score itself: on well-separated shadows the latter hugs the member distribution
    and transfers badly to a target whose scores differ slightly.
    """
    from privquant.metrics.roc import roc_curve

    fpr, tpr, thr = roc_curve(scores, members)
    best = int(np.argmax(tpr - fpr))
    if not np.isfinite(thr[best]):  # "predict nobody" wins only on useless scores
        return float(np.max(scores)) + 1.0
    if best + 1 < len(thr):
        return float(0.5 * (thr[best] + thr[best + 1]))
    return float(thr[best])


def relative_change(reference: float, value: float) -> float | None:
    """(reference - value) / reference, the paper's "reduction" (None when reference is 0)."""
    return None if reference == 0 else (reference - value) / reference
