"""All metrics of one attack on one target, with bootstrap confidence intervals."""

from __future__ import annotations

from typing import Any

import numpy as np

from privquant.metrics.decision import confusion_metrics
from privquant.metrics.epsilon import epsilon_lower_bound

# The one definition of the metric names every module, table and result file uses.
FPR_LEVELS = (0.01, 0.001, 0.0001)


def fpr_key(level: float) -> str:
    """The name of the TPR at false-positive rate ``level`` (0.01 -> "tpr@1%fpr")."""
    return f"tpr@{level * 100:g}%fpr"


AUC = "auc"
TPR_1, TPR_01, TPR_001 = (fpr_key(level) for level in FPR_LEVELS)
THRESHOLD_METRICS = ("balanced_accuracy", "accuracy", "precision", "recall", "f1", "advantage")
CI_METRICS = (AUC, TPR_1, TPR_01, TPR_001, *THRESHOLD_METRICS)


class _SortedScores:
    """Scores sorted once; any resample is a vector of per-point counts, so each bootstrap
    replicate costs a cumulative sum instead of a sort."""

    def __init__(self, scores: np.ndarray, members: np.ndarray, threshold: float) -> None:
        order = np.argsort(-scores, kind="mergesort")
        s = scores[order]
        self.members = members[order]
        self.last_of_tie = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
        self.predicted = s >= threshold

    def metrics(self, counts: np.ndarray) -> dict[str, float]:
        m = self.members
        pos_w, neg_w = np.where(m, counts, 0), np.where(m, 0, counts)
        n_pos, n_neg = max(pos_w.sum(), 1), max(neg_w.sum(), 1)
        tpr = np.r_[0.0, np.cumsum(pos_w)[self.last_of_tie] / n_pos]
        fpr = np.r_[0.0, np.cumsum(neg_w)[self.last_of_tie] / n_neg]
        out = {"auc": float(np.trapezoid(tpr, fpr))}
        for level in FPR_LEVELS:
            out[fpr_key(level)] = float(tpr[fpr <= level + 1e-12].max())
        pred = self.predicted
        tp, fp = float(pos_w[pred].sum()), float(neg_w[pred].sum())
        fn, tn = float(n_pos - tp), float(n_neg - fp)
        out.update(confusion_metrics(tp, fp, fn, tn))
        return out


def evaluate_scores(
    scores: np.ndarray,
    members: np.ndarray,
    threshold: float,
    n_bootstrap: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
    audit_thresholds: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Threshold-free (AUC, TPR at fixed FPR) and decision metrics at ``threshold``.

    ``threshold`` must come from shadow models, never from ``members``. Confidence intervals
    are percentile bootstraps that resample members and non-members separately (each resample
    keeps the evaluation set's class balance). ``audit_thresholds`` (also from shadows; the
    decision threshold is always included) each give an empirical epsilon lower bound with
    Clopper-Pearson confidence; ``epsilon_lower_bound`` is the largest.
    """
    scores = np.asarray(scores, dtype=np.float64)
    members = np.asarray(members, dtype=bool)
    ss = _SortedScores(scores, members, threshold)
    result: dict[str, Any] = ss.metrics(np.ones(len(scores), dtype=np.int64))
    result["threshold"] = float(threshold)
    result["n_members"] = int(members.sum())
    result["n_nonmembers"] = int((~members).sum())
    result["fpr_resolution"] = 1.0 / max(1, result["n_nonmembers"])
    audits = {"decision": threshold, **(audit_thresholds or {})}
    result["epsilon"] = {}
    for name, t in audits.items():
        pred = scores >= t
        tp, fp = float((pred & members).sum()), float((pred & ~members).sum())
        fn, tn = float(members.sum() - tp), float((~members).sum() - fp)
        result["epsilon"][name] = {"threshold": float(t), "tpr": tp / max(1.0, tp + fn),
                                   "fpr": fp / max(1.0, fp + tn),
                                   **epsilon_lower_bound(tp, fp, fn, tn, confidence)}  # fmt: skip
    result["epsilon_lower_bound"] = max(e["epsilon"] for e in result["epsilon"].values())
    if n_bootstrap > 0 and result["n_members"] and result["n_nonmembers"]:
        rng = np.random.default_rng(seed)
        pos, neg = np.nonzero(ss.members)[0], np.nonzero(~ss.members)[0]
        samples: dict[str, list[float]] = {k: [] for k in CI_METRICS}
        for _ in range(n_bootstrap):
            counts = np.bincount(rng.choice(pos, len(pos)), minlength=len(scores))
            counts += np.bincount(rng.choice(neg, len(neg)), minlength=len(scores))
            boot = ss.metrics(counts)
            for k in CI_METRICS:
                samples[k].append(boot[k])
        lo, hi = (1 - confidence) / 2 * 100, (1 + confidence) / 2 * 100
        result["ci"] = {
            k: [float(np.percentile(v, lo)), float(np.percentile(v, hi))]
            for k, v in samples.items()
        }
        result["ci_level"] = confidence
    return result
