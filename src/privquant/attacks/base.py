"""What an attack is, how attacks are registered by name, and how thresholds come from shadows.

An attack is a function ``(signals, target, references) -> scores`` giving one membership score
per pool point (higher means "member"). It may read the logits of every model but the ``keep``
rows of the ``references`` only: the target's own membership never enters. The decision
threshold for accuracy/precision/recall/F1 is fitted on shadow models the same way for every
attack (:func:`shadow_threshold`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from privquant.errors import ConfigError
from privquant.metrics import best_threshold
from privquant.signals import Signals


class ScoreFn(Protocol):
    def __call__(
        self, signals: Signals, target: int, references: np.ndarray, **params: Any
    ) -> np.ndarray: ...


@dataclass(frozen=True)
class Attack:
    name: str
    score: ScoreFn
    description: str
    # How the decision threshold is obtained: "shadow" = re-run the attack with shadows as
    # pseudo-targets; "fixed" = the score has a natural threshold (e.g. a classifier's 0.5).
    threshold: str = "shadow"
    fixed_threshold: float = 0.0


ATTACKS: dict[str, Attack] = {}


def register(attack: Attack) -> Attack:
    ATTACKS[attack.name] = attack
    return attack


def get_attack(name: str) -> Attack:
    if name not in ATTACKS:
        raise ConfigError(
            f"attacks: unknown attack {name!r}; choose from {sorted(ATTACKS)} or 'all'"
        )
    return ATTACKS[name]


_FAMILY_ORDER = (
    "loss",
    "confidence",
    "entropy",
    "modified_entropy",
    "shokri",
    "lira",
    "rmia",
    "label_only",
)


def _family_rank(name: str) -> tuple[int, str]:
    base = name.removesuffix("_classwise")
    rank = next(
        (i for i, f in enumerate(_FAMILY_ORDER) if base == f or name.startswith(f + "_")),
        len(_FAMILY_ORDER),
    )
    return rank, name


def resolve_attack_names(spec: str | list[str]) -> list[str]:
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [n.strip() for n in names if n.strip()]
    if names == ["all"]:
        return sorted(ATTACKS, key=_family_rank)
    for n in names:
        get_attack(n)
    return names


def references_for(signals: Signals, target: int) -> np.ndarray:
    if not 0 <= target < signals.n_models:
        raise ConfigError(f"target: model index must be in 0..{signals.n_models - 1}, got {target}")
    return np.array([m for m in range(signals.n_models) if m != target], dtype=np.int64)


def shadow_threshold(
    attack: Attack, signals: Signals, target: int, params: dict[str, Any], n_pseudo_targets: int = 4
) -> float:
    """Decision threshold chosen on shadow models only.

    Up to ``n_pseudo_targets`` shadows act in turn as the target; the attack is re-run against
    each with the remaining shadows as references (the real target is excluded entirely), and
    the threshold maximizing balanced accuracy on their pooled, known memberships is returned.
    """
    if attack.threshold == "fixed":
        return attack.fixed_threshold
    refs = references_for(signals, target)
    if len(refs) < 2:
        raise ConfigError(
            f"attack {attack.name}: needs at least 3 models to calibrate a threshold on shadows"
        )
    pseudo = refs[:n_pseudo_targets]
    scores, members = [], []
    for p in pseudo:
        others = refs[refs != p]
        scores.append(attack.score(signals, int(p), others, **params))
        members.append(signals.keep[p])
    return best_threshold(np.concatenate(scores), np.concatenate(members))
