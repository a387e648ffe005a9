"""Metric-threshold attacks: loss (Yeom et al. 2018), confidence, entropy and modified entropy
(Song & Mittal 2021), each with a global or a class-wise threshold."""

from __future__ import annotations

import numpy as np

from privquant.attacks import statistics as sig
from privquant.attacks.base import Attack, register
from privquant.metrics import best_threshold
from privquant.signals import Signals

# Each maps one model's logits [points, queries, classes] to a membership score (higher = member)
# on the original query. Confidence ranks by phi = log(p_y / (1 - p_y)), a monotone function of
# p_y that does not round to 1.0 on confident members.
_STATISTICS = {
    "loss": lambda lg, y: -sig.loss(lg, y),
    "confidence": lambda lg, y: sig.scaled_logit(lg, y),
    "entropy": lambda lg, y: -sig.entropy(lg),
    "modified_entropy": lambda lg, y: -sig.modified_entropy(lg, y),
}


def _statistic(name: str, signals: Signals, model: int) -> np.ndarray:
    return _STATISTICS[name](signals.logits[model, :, 0], signals.labels)


def _global(name: str):  # noqa: ANN202
    def score(signals: Signals, target: int, references: np.ndarray) -> np.ndarray:
        return _statistic(name, signals, target)

    return score


def _classwise(name: str):  # noqa: ANN202
    def score(signals: Signals, target: int, references: np.ndarray) -> np.ndarray:
        # Per class, the threshold that best separates shadow members from shadow non-members;
        # the target's score is its distance above its class's threshold, so one cut at 0 applies.
        stats = np.stack([_statistic(name, signals, int(r)) for r in references])
        keep = signals.keep[references]
        target_stat = _statistic(name, signals, target)
        out = np.empty(signals.n_points)
        for c in np.unique(signals.labels):
            idx = signals.labels == c
            t = best_threshold(stats[:, idx].ravel(), keep[:, idx].ravel())
            out[idx] = target_stat[idx] - t
        return out

    return score


for _name, _desc in [
    ("loss", "Yeom et al. 2018: low cross-entropy loss means member"),
    ("confidence", "high true-class probability means member"),
    ("entropy", "low prediction entropy means member"),
    ("modified_entropy", "Song & Mittal 2021: modified entropy using the true label"),
]:
    register(Attack(_name, _global(_name), _desc + " (global threshold from shadows)"))
    register(Attack(f"{_name}_classwise", _classwise(_name), _desc + " (class-wise thresholds from shadows)",
                    threshold="fixed", fixed_threshold=0.0))  # fmt: skip
