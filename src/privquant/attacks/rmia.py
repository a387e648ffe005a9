"""The robust membership inference attack (RMIA, Zarifzadeh et al. 2024).

The likelihood ratio Pr(x|target) / Pr(x) is compared pairwise with the same ratio on
population points z; the score is the fraction of z that x dominates by a factor ``gamma``.
Everything is computed in log space from the scaled logit, so confident models keep full
resolution, and ties between points that dominate the same z are broken by the ratio itself.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field
from scipy.special import logsumexp

from privquant.attacks import statistics as sig
from privquant.attacks.base import Attack, AttackParams, even_reference_counts, register
from privquant.metrics import auc
from privquant.signals import Signals

A_GRID = tuple(np.round(np.linspace(0.0, 1.0, 11), 2))


def _log_mean_exp(values: np.ndarray, mask: np.ndarray | None = None, axis: int = 0) -> np.ndarray:
    """log of the mean of exp(values) along ``axis`` over entries where ``mask`` holds (-inf
    where none does), at full resolution near 0: log(mean(e^v)) = top + log1p(mean(expm1(v - top))).

    ``logsumexp(v) - log(n)`` rounds log(2 e^v) - log 2 back to 0 when v is ~1e-26, the log p of
    a confident model's member, and would erase the very differences RMIA reads.
    """
    if mask is None:
        mask = np.ones(values.shape, dtype=bool)
    n = mask.sum(axis)
    top = np.where(mask, values, -np.inf).max(axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(invalid="ignore"):
        shifted = np.where(mask, np.expm1(values - top), 0.0)
    mean = shifted.sum(axis) / np.maximum(n, 1)
    return np.where(n > 0, np.squeeze(top, axis) + np.log1p(mean), -np.inf)


def _view_mean_log(lp: np.ndarray) -> np.ndarray:
    """log of the probability averaged over query views: [..., Q] -> [...]."""
    return _log_mean_exp(lp, axis=-1)


def _log_p(signals: Signals, temperature: float, population: bool = False) -> np.ndarray | None:
    """log p_y and log(1 - p_y), view-averaged: [2, models, points]."""

    def fn(lg: np.ndarray, y: np.ndarray) -> np.ndarray:
        phi = sig.scaled_logit(
            lg, y, temperature
        )  # log p = -softplus(-phi), log(1 - p) = -softplus(phi)
        return np.stack(
            [_view_mean_log(-np.logaddexp(0.0, -phi)), _view_mean_log(-np.logaddexp(0.0, phi))]
        )

    name = f"rmia_log_p_T{temperature}"
    if population:  # fn's output is [2, models, points]: models on axis 1
        return signals.population_statistic(name, fn, model_axis=1)
    return signals.statistic(name, fn, model_axis=1)


def _log_mean(values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log of the mean of exp(values) over rows where ``mask`` holds, and the row counts."""
    return _log_mean_exp(values, mask), mask.sum(0)


def _log_px(
    log_p: np.ndarray,
    log_q: np.ndarray,
    in_mask: np.ndarray,
    out_mask: np.ndarray,
    a: float,
    online: bool,
) -> np.ndarray:
    """log Pr(x) over reference rows [R, N]; the masks [R, N] say which references are IN / OUT.

    Online: IN and OUT references weighted equally, (p_IN + p_OUT) / 2, so the share of IN
    references (which a balanced keep matrix ties to the target's membership) does not matter.
    Offline: OUT references only, Pr(x) = ((1 + a) p_OUT + 1 - a) / 2 = 1 - (1 + a)(1 - p_OUT) / 2,
    computed from 1 - p so it does not round to 1 for confident models.
    """
    all_refs = _log_mean_exp(log_p)
    if online:
        log_in, n_in = _log_mean(log_p, in_mask)
        log_out, n_out = _log_mean(log_p, out_mask)
        both = (n_in > 0) & (n_out > 0)
        return np.where(both, np.logaddexp(log_in, log_out) - np.log(2), all_refs)
    return _offline_log_px(_log_q_out(log_q, out_mask), a)


def _log_q_out(log_q: np.ndarray, out_mask: np.ndarray) -> np.ndarray:
    """log of the mean 1 - p over OUT references: offline RMIA's part that does not depend on a."""
    log_q_out, n_out = _log_mean(log_q, out_mask)
    # Points without an OUT reference borrow the average over points (rare with coin flips).
    fallback = logsumexp(log_q) - np.log(log_q.size)
    return np.where(n_out > 0, log_q_out, fallback)


def _offline_log_px(log_q_out: np.ndarray, a: float) -> np.ndarray:
    # a = 1 with every OUT reference giving the point probability 0 (q = 1): Pr(x) is exactly 0,
    # log Pr(x) = -inf and the ratio +inf, which ranks correctly; numpy's warning would be noise.
    with np.errstate(divide="ignore"):
        return np.log1p(-0.5 * (1 + a) * np.exp(log_q_out))


def _log_ratios(
    signals: Signals,
    target: int,
    references: np.ndarray,
    online: bool,
    a: float,
    temperature: float,
) -> tuple[np.ndarray, np.ndarray]:
    """log Pr(x|target)/Pr(x) for pool points, and for population points z."""
    lp, lq = _log_p(signals, temperature)
    excluded = signals.n_models - len(references)
    keep = signals.keep[references]
    in_mask = even_reference_counts(keep, excluded) if online else np.zeros_like(keep)
    out_mask = even_reference_counts(~keep, excluded)
    ratio_x = lp[target] - _log_px(lp[references], lq[references], in_mask, out_mask, a, online)
    pop = _log_p(signals, temperature, population=True)
    if pop is not None:  # no model trained on these rows: every reference is OUT for them
        plp, plq = pop
        none = np.zeros((len(references), plp.shape[1]), dtype=bool)
        ratio_z = plp[target] - _log_px(plp[references], plq[references], none, ~none, a, online)
    else:  # the pool itself; the target's membership of these z is unknown and never read
        ratio_z = ratio_x
    return ratio_x, ratio_z


def tune_offline_a(
    signals: Signals, references: np.ndarray, temperature: float = 1.0, n_pseudo: int = 2
) -> float:
    """The offline ``a`` with the best AUC on shadow models acting as targets (never the target).

    As Privacy Meter does with a reference model: offline RMIA approximates the IN
    distribution through ``a``, whose best value depends on how much models memorize.
    The OUT references' mean is computed once per pseudo-target; only the cheap map from it
    to Pr(x) is redone for each ``a`` on the grid.
    """
    if len(references) < 3:
        return 0.3
    lp, lq = _log_p(signals, temperature)
    aucs = np.empty((min(n_pseudo, len(references)), len(A_GRID)))
    for i, p in enumerate(references[:n_pseudo]):
        others = references[references != p]
        out_mask = even_reference_counts(~signals.keep[others], signals.n_models - len(others))
        q_out = _log_q_out(lq[others], out_mask)
        for j, a in enumerate(A_GRID):
            aucs[i, j] = auc(lp[p] - _offline_log_px(q_out, float(a)), signals.keep[p])
    best, best_auc = 0.3, -1.0
    for a, mean_auc in zip(A_GRID, aucs.mean(0), strict=True):
        if mean_auc > best_auc + 1e-12:
            best, best_auc = float(a), float(mean_auc)
    return best


def rmia_score(
    signals: Signals,
    target: int,
    references: np.ndarray,
    online: bool = False,
    offline_a: float | None = None,
    gamma: float = 1.0,
    temperature: float = 1.0,
    n_population: int = 10_000,
    seed: int = 0,
) -> np.ndarray:
    """RMIA score: the fraction of population points z with ratio_x / ratio_z > ``gamma``,
    plus a tie-break below one step of that fraction, increasing in ratio_x.

    ``offline_a`` None tunes ``a`` on shadows (:func:`tune_offline_a`). Population points come
    from the signals' population block (rows no model trained on) when present, else from the
    pool. The score is monotone in ratio_x, so any gamma gives the same ROC; gamma only moves
    the fraction part, which is what a fixed decision threshold reads.
    """
    a = (
        0.0
        if online
        else (
            offline_a if offline_a is not None else tune_offline_a(signals, references, temperature)
        )
    )
    ratio_x, ratio_z = _log_ratios(signals, target, references, online, a, temperature)
    rng = np.random.default_rng(seed)
    z = np.sort(rng.choice(ratio_z, size=min(n_population, len(ratio_z)), replace=False))
    frac = np.searchsorted(z, ratio_x - np.log(gamma), side="left") / len(z)
    # arctan keeps ~1e-16 relative resolution far beyond the range where a logistic saturates.
    return frac + (0.5 + np.arctan(ratio_x) / np.pi) / (len(z) + 1)


class RmiaOnlineParams(AttackParams):
    gamma: float = Field(1.0, gt=0, description="pairwise likelihood-ratio threshold")
    temperature: float = Field(1.0, gt=0, description="softmax temperature of the signals")
    n_population: int = Field(10_000, ge=1, description="population points z compared against")
    seed: int = Field(0, ge=0, description="draw of the population points")


class RmiaParams(RmiaOnlineParams):
    offline_a: float | None = Field(
        None, ge=0, le=1, description="offline scaling a; None: tuned on shadows"
    )


register(Attack("rmia", rmia_score,
                "Zarifzadeh et al. 2024, offline (OUT references, a tuned on shadows), gamma=1",
                params=RmiaParams))  # fmt: skip
register(Attack("rmia_online", lambda s, t, r, **kw: rmia_score(s, t, r, online=True, **kw),
                "Zarifzadeh et al. 2024, online (all references), gamma=1",
                params=RmiaOnlineParams))  # fmt: skip
