"""The shadow-model attack of Shokri et al. (2017), as used by Famili & Lao (2023).

Attack classifiers learn member vs non-member from the shadow models' outputs, where
membership is known; they are then applied to the target's outputs.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from privquant.attack_classifiers import fit_predict_all
from privquant.attacks import statistics as sig
from privquant.attacks.base import Attack, AttackParams, register
from privquant.signals import Signals


def _log_probs(signals: Signals) -> np.ndarray:
    """[models, points, classes] log-posteriors of the original query, floored at -50.

    Cached floored and in float32: the classifiers bin each feature into at most 255 levels, so
    float64 buys nothing, and this is the largest statistic (the old float64 cache plus a
    floored copy per call were 3/4 of a GiB at 64 models x 50,000 points).
    """

    def floored(lg: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.maximum(sig.log_probs(lg[:, :, 0]), -50.0).astype(np.float32)

    return signals.statistic("log_probs_q0_floored_f32", floored)


def _sample_rows(
    n_models: int, idx: np.ndarray, max_rows: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``max_rows`` (shadow, point) pairs drawn without replacement."""
    total = n_models * len(idx)
    flat = rng.choice(total, size=min(max_rows, total), replace=False)
    return flat // len(idx), idx[flat % len(idx)]


def shokri_score(
    signals: Signals,
    target: int,
    references: np.ndarray,
    per_class: bool = True,
    top_k: int = 10,
    max_train_rows: int = 40_000,
    seed: int = 0,
    jobs: int | None = None,
) -> np.ndarray:
    """Probability of "member" from attack classifiers trained on shadow outputs.

    ``per_class``: one classifier per true class on the full posterior vector (Shokri et al.).
    Otherwise one global classifier on the ``top_k`` sorted posteriors, the posterior of the
    true label and the one-hot label. ``jobs``: processes sharing the per-class fits (None: every
    core; the scores are the same for any number).
    """
    lp = _log_probs(signals)
    keep = signals.keep[references]
    rng = np.random.default_rng(seed)
    if per_class:
        out = np.empty(signals.n_points)
        classes = np.unique(signals.labels)
        tasks, where = [], []
        for c in classes:
            idx = np.nonzero(signals.labels == c)[0]
            rows, cols = _sample_rows(
                len(references), idx, max(1000, max_train_rows // len(classes)), rng
            )
            tasks.append((lp[references[rows], cols], keep[rows, cols], lp[target, idx], seed))
            where.append(idx)
        for idx, scores in zip(where, fit_predict_all(tasks, jobs), strict=True):
            out[idx] = scores
        return out
    k = min(top_k, signals.n_classes)
    labels = signals.labels
    feats = np.concatenate(
        [
            -np.sort(-lp, axis=-1)[..., :k],
            np.take_along_axis(
                lp, np.broadcast_to(labels[None, :, None], lp.shape[:2] + (1,)), axis=-1
            ),
            np.broadcast_to(np.eye(signals.n_classes)[labels], lp.shape),
        ],
        axis=-1,
    )
    rows, cols = _sample_rows(len(references), np.arange(signals.n_points), max_train_rows, rng)
    return fit_predict_all(
        [(feats[references[rows], cols], keep[rows, cols], feats[target], seed)]
    )[0]


class ShokriParams(AttackParams):
    top_k: int = Field(10, ge=1, description="sorted posteriors fed to the attack classifier")
    max_train_rows: int = Field(40_000, ge=2, description="shadow rows the classifiers train on")
    seed: int = Field(0, ge=0)


register(Attack("shokri", shokri_score, "Shokri et al. 2017: per-class attack classifiers on shadow posteriors",
                threshold="fixed", fixed_threshold=0.5, params=ShokriParams))  # fmt: skip
register(Attack("shokri_global", lambda s, t, r, **kw: shokri_score(s, t, r, per_class=False, **kw),
                "one attack classifier on sorted posteriors, true-label posterior and label",
                threshold="fixed", fixed_threshold=0.5, params=ShokriParams))  # fmt: skip
