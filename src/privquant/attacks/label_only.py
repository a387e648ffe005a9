"""Label-only attacks: the attacker sees predicted classes, never confidences.

These survive defenses that only coarsen the output probabilities, so they are reported
beside every such defense.
"""

from __future__ import annotations

import numpy as np

from privquant.attacks import statistics as sig
from privquant.attacks.base import Attack, register
from privquant.signals import Signals


def _correct(signals: Signals) -> np.ndarray:
    return signals.statistic("correct", sig.correct)  # [M, N, Q]


def correctness_score(signals: Signals, target: int, references: np.ndarray) -> np.ndarray:
    """Yeom et al.'s gap attack: a correctly classified point is called a member."""
    return _correct(signals)[target, :, 0]


def augmentation_score(signals: Signals, target: int, references: np.ndarray) -> np.ndarray:
    """Choquette-Choo et al. 2021: the share of query views (original and augmented) that the
    target still classifies correctly; members are more robust."""
    return _correct(signals)[target].mean(-1)


register(
    Attack(
        "label_only_correctness", correctness_score, "label only: correct prediction means member"
    )
)
register(Attack("label_only_augmentation", augmentation_score,
                "label only: robustness of the prediction to the augmented query views"))  # fmt: skip


def noise_score(signals: Signals, target: int, references: np.ndarray) -> np.ndarray:
    """Choquette-Choo et al. 2021: the share of Gaussian-noised copies the target still labels
    correctly, a proxy for the distance to the decision boundary (members lie farther from it).
    Ties between equally robust points are broken by correctness on the query views."""
    robust = signals.extras["noise_robustness"][target]
    return robust + 1e-3 * _correct(signals)[target].mean(-1)


register(Attack("label_only_noise", noise_score,
                "label only: robustness of the prediction to Gaussian input noise (decision boundary)",
                requires=("noise_robustness",)))  # fmt: skip
