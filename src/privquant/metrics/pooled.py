"""Metrics pooled over every target, with exact intervals on TPR at low FPR.

Each target's scores come from its own leave-one-out attack (the other models are its
references); pooling them gives one ROC whose low-FPR end rests on ``targets x non-members``
negatives instead of one model's. A TPR at FPR level ``a`` resting on ``n`` negatives is only
resolvable when ``a * n`` false positives are expected at least ``MIN_EXPECTED_FP`` times:
below that, the empirical threshold is set by one or two points and the number is noise.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from privquant.metrics.decision import confusion_metrics
from privquant.metrics.epsilon import clopper_pearson
from privquant.metrics.evaluate import FPR_LEVELS, _SortedScores, fpr_key

MIN_EXPECTED_FP = 10.0


def tpr_at_fpr_interval(
    scores: np.ndarray, members: np.ndarray, level: float, confidence: float = 0.95
) -> dict[str, Any]:
    """TPR at FPR <= ``level`` (the empirical rule of :func:`privquant.metrics.tpr_at_fpr`) with
    an exact interval that also covers where the threshold lands.

    The true threshold ``t*`` (FPR exactly ``level``) has ``K ~ Binomial(n_neg, level)``
    negatives above it; with probability ``1 - alpha/2``, ``K`` lies in ``[k_lo, k_hi]``, so
    ``t*`` lies between the thresholds admitting ``k_lo`` and ``k_hi`` negatives. The TPR at
    those two thresholds gets a Clopper-Pearson bound at ``alpha/4`` each (lower bound at the
    strict one, upper at the loose one): the interval holds with at least ``confidence``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    members = np.asarray(members, dtype=bool)
    pos, neg = np.sort(scores[members])[::-1], np.sort(scores[~members])[::-1]
    n_pos, n_neg = len(pos), len(neg)
    alpha = 1.0 - confidence

    def positives_above_negative(k: int) -> int:
        """Members scoring strictly above the (k+1)-th highest non-member (all when k >= n)."""
        if k >= n_neg:
            return n_pos
        return int(np.searchsorted(-pos, -neg[k], side="left"))

    # The point estimate: a threshold just above the (k+1)-th highest non-member admits at most
    # k = floor(level * n) non-members (fewer when they tie with it), as in the exact ROC.
    value = positives_above_negative(int(np.floor(level * n_neg + 1e-9))) / max(n_pos, 1)
    from scipy.stats import binom  # here, not at import: see clopper_pearson

    k_lo = int(binom.ppf(alpha / 4, n_neg, level)) if n_neg else 0
    k_hi = int(binom.ppf(1 - alpha / 4, n_neg, level)) if n_neg else 0
    lo, _ = clopper_pearson(positives_above_negative(max(k_lo - 1, 0)), n_pos, alpha / 2)
    _, hi = clopper_pearson(positives_above_negative(k_hi), n_pos, alpha / 2)
    expected = level * n_neg
    return {"value": float(value), "ci": [float(min(lo, value)), float(max(hi, value))],
            "n_positives": n_pos, "n_negatives": n_neg, "expected_false_positives": float(expected),
            "resolved": bool(expected >= MIN_EXPECTED_FP)}  # fmt: skip


def pooled_metrics(
    scores: list[np.ndarray],
    members: list[np.ndarray],
    predicted: list[np.ndarray],
    n_bootstrap: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Pooled ROC metrics over targets (each entry one target's points): AUC with a stratified
    bootstrap interval, TPR at every FPR level with its exact interval and resolution, and the
    decision metrics of each target's own shadow-chosen decisions ``predicted``."""
    s = np.concatenate(scores).astype(np.float64)
    m = np.concatenate(members).astype(bool)
    p = np.concatenate(predicted).astype(bool)
    out: dict[str, Any] = {"n_targets": len(scores), "n_members": int(m.sum()),
                           "n_nonmembers": int((~m).sum())}  # fmt: skip
    if not m.any() or m.all():
        return {**out, "auc": None, "auc_ci": None, "tpr": {}}
    ss = _SortedScores(s, m, np.inf)
    out["auc"] = ss.metrics(np.ones(len(s), dtype=np.int64))["auc"]
    out["auc_ci"] = None
    if n_bootstrap > 0:
        rng = np.random.default_rng(seed)
        pos, neg = np.nonzero(ss.members)[0], np.nonzero(~ss.members)[0]
        aucs = []
        for _ in range(n_bootstrap):
            counts = np.bincount(rng.choice(pos, len(pos)), minlength=len(s))
            counts += np.bincount(rng.choice(neg, len(neg)), minlength=len(s))
            aucs.append(ss.metrics(counts)["auc"])
        q = [(1 - confidence) / 2 * 100, (1 + confidence) / 2 * 100]
        out["auc_ci"] = [float(x) for x in np.percentile(aucs, q)]
    out["tpr"] = {
        fpr_key(level): tpr_at_fpr_interval(s, m, level, confidence) for level in FPR_LEVELS
    }
    tp, fp = float((p & m).sum()), float((p & ~m).sum())
    decisions = confusion_metrics(tp, fp, float(m.sum() - tp), float((~m).sum() - fp))
    out["decision"] = {k: decisions[k] for k in ("accuracy", "balanced_accuracy", "precision",
                                                 "recall", "f1", "advantage")}  # fmt: skip
    return out
