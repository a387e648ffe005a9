"""Empirical privacy: a lower bound on epsilon from an attack's TPR and FPR (auditing style).

Any (epsilon, 0)-DP training satisfies TPR <= e^eps FPR and 1 - FPR <= e^eps (1 - TPR) for every
membership test. Clopper-Pearson intervals on TPR and FPR (both at once: each at level
alpha/2) turn a measured pair into a bound that holds with the stated confidence, as in the
DP-SGD auditing literature (Jagielski et al. 2020; Nasr et al. 2021).
"""

from __future__ import annotations

import math

import numpy as np


def clopper_pearson(successes: float, trials: float, alpha: float) -> tuple[float, float]:
    """Exact two-sided (1 - alpha) interval for a binomial proportion."""
    # Imported here: scipy.stats takes 1.4 s to import on a 2-core host, and a training worker
    # (which imports this package through the defenses) computes no interval.
    from scipy.stats import beta

    if trials <= 0:
        return 0.0, 1.0
    k = successes
    lo = float(beta.ppf(alpha / 2, k, trials - k + 1)) if k > 0 else 0.0
    hi = float(beta.ppf(1 - alpha / 2, k + 1, trials - k)) if k < trials else 1.0
    return lo, hi


def accuracy_interval(accuracy: float, rows: int, alpha: float = 0.05) -> tuple[float, float]:
    """Exact (1 - alpha) interval of an accuracy measured on ``rows`` rows."""
    return clopper_pearson(round(accuracy * rows), rows, alpha)


def paired_accuracy_difference_interval(
    correct_a: np.ndarray, correct_b: np.ndarray, alpha: float = 0.05
) -> tuple[float, float]:
    """(1 - alpha) interval of accuracy(a) - accuracy(b), two models scored on the same rows.

    Rows both get right or both get wrong say nothing about the difference; of the ``d`` rows
    where they disagree, ``k`` favour a. Conditional on ``d`` (exact McNemar), ``k`` is binomial
    with p = P(a right | they disagree) and the difference is d/n (2p - 1). Where the models
    agree on most rows this is much narrower than two separate accuracy intervals, which ignore
    that both miss mostly the same hard rows.
    """
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise ValueError(
            f"expected two equal-length 1-d correctness vectors, got {a.shape} and {b.shape}"
        )
    k, d = int((a & ~b).sum()), int((a != b).sum())
    if d == 0:
        return 0.0, 0.0
    lo, hi = clopper_pearson(k, d, alpha)
    return d / len(a) * (2 * lo - 1), d / len(a) * (2 * hi - 1)


def epsilon_lower_bound(
    tp: float, fp: float, fn: float, tn: float, confidence: float = 0.95
) -> dict[str, float]:
    """The epsilon a (epsilon, 0)-DP model must at least have, given these decisions.

    Returns the bound and the confidence limits it used (TPR low, FPR high).
    """
    alpha = (1 - confidence) / 2  # two rates bounded at once
    tpr_lo, _ = clopper_pearson(tp, tp + fn, 2 * alpha)
    _, fpr_hi = clopper_pearson(fp, fp + tn, 2 * alpha)
    bounds = [0.0]
    if tpr_lo > 0 and fpr_hi > 0:
        bounds.append(math.log(tpr_lo / fpr_hi))
    if fpr_hi < 1 and tpr_lo < 1:
        bounds.append(math.log((1 - fpr_hi) / (1 - tpr_lo)))
    return {"epsilon": max(bounds), "tpr_low": tpr_lo, "fpr_high": fpr_hi}
