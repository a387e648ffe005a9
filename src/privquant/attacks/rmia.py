"""The robust membership inference attack (RMIA, Zarifzadeh et al. 2024).

The likelihood ratio Pr(x|target) / Pr(x) is compared pairwise with the same ratio on
population points z; the score is the fraction of z that x dominates by a factor ``gamma``.
"""

from __future__ import annotations

import numpy as np

from privquant.attacks import statistics as sig
from privquant.attacks.base import Attack, register
from privquant.signals import Signals


def rmia_score(
    signals: Signals,
    target: int,
    references: np.ndarray,
    online: bool = False,
    offline_a: float = 0.3,
    gamma: float = 1.0,
    n_population: int = 5000,
    seed: int = 0,
) -> np.ndarray:
    """RMIA score in [0, 1].

    Pr(x) is the mean true-class probability over reference models (online: all; offline:
    OUT models only, corrected by ``offline_a`` as Pr(x) = ((1 + a) Pr_OUT(x) + 1 - a) / 2).
    Probabilities are averaged over query views first.

    Population points z are a seeded subsample of the pool itself, because the signals hold
    no other data; their membership in the target is unknown to the attacker and never read.
    With ``gamma = 1`` the score is a monotone function of the ratio, so AUC and TPR@FPR are
    unaffected by which z are drawn.
    """
    p = signals.statistic(
        "confidence_mean_q", lambda lg, y: sig.confidence(lg, y).mean(-1)
    )  # [M, N]
    ref_p = p[references]
    if online:
        p_x = ref_p.mean(0)
    else:
        out = ~signals.keep[references]
        p_out = (ref_p * out).sum(0) / np.maximum(out.sum(0), 1)
        p_out = np.where(out.sum(0) > 0, p_out, ref_p.mean())
        p_x = 0.5 * ((1 + offline_a) * p_out + (1 - offline_a))
    ratio = p[target] / np.maximum(p_x, 1e-30)
    rng = np.random.default_rng(seed)
    z = rng.choice(signals.n_points, size=min(n_population, signals.n_points), replace=False)
    ratio_z = np.sort(ratio[z])
    return np.searchsorted(ratio_z, ratio / gamma, side="left") / len(ratio_z)


register(
    Attack("rmia", rmia_score, "Zarifzadeh et al. 2024, offline (OUT references, a=0.3), gamma=1")
)
register(Attack("rmia_online", lambda s, t, r, **kw: rmia_score(s, t, r, online=True, **kw),
                "Zarifzadeh et al. 2024, online (all references), gamma=1"))  # fmt: skip
