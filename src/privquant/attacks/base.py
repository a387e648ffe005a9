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
from pydantic import BaseModel, ConfigDict, ValidationError

from privquant.errors import ConfigError
from privquant.metrics import FPR_LEVELS, best_threshold
from privquant.signals import Signals


class ScoreFn(Protocol):
    def __call__(
        self, signals: Signals, target: int, references: np.ndarray, **params: Any
    ) -> np.ndarray: ...


class AttackParams(BaseModel):
    """An attack's keyword parameters (``attack_params.<name>`` in a config): unknown keys and
    out-of-range values fail at config validation, before any model trains."""

    model_config = ConfigDict(extra="forbid")


class NoParams(AttackParams):
    """The attack takes no parameters."""


@dataclass(frozen=True)
class Attack:
    name: str
    score: ScoreFn
    description: str
    # How the decision threshold is obtained: "shadow" = re-run the attack with shadows as
    # pseudo-targets; "fixed" = the score has a natural threshold (e.g. a classifier's 0.5).
    threshold: str = "shadow"
    fixed_threshold: float = 0.0
    # Signals extras the attack reads (measured on the model itself, e.g. under input noise).
    requires: tuple[str, ...] = ()
    params: type[AttackParams] = NoParams

    def available(self, signals: Signals) -> bool:
        return all(r in signals.extras for r in self.requires)

    def validate_params(self, raw: Any, where: str = "attack_params") -> dict[str, Any]:
        """``raw`` checked against the attack's params model; the keyword arguments to pass."""
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}.{self.name}: expected a mapping of parameters, got {raw!r}")
        try:
            return self.params.model_validate(raw).model_dump(exclude_unset=True)
        except ValidationError as e:
            lines = []
            for err in e.errors():
                loc = ".".join(str(x) for x in err["loc"])
                allowed = sorted(self.params.model_fields) or "none"
                hint = f"; {self.name} takes {allowed}" if err["type"] == "extra_forbidden" else ""
                lines.append(
                    f"{where}.{self.name}.{loc}: {err['msg']} (got {err['input']!r}){hint}"
                )
            raise ConfigError("\n".join(lines)) from None


ATTACKS: dict[str, Attack] = {}


def register(attack: Attack, replace: bool = False) -> Attack:
    """Add ``attack`` under its name; a name already taken is refused unless ``replace``."""
    if attack.name in ATTACKS and not replace:
        raise ConfigError(
            f"attack {attack.name!r} is already registered ({ATTACKS[attack.name].description});"
            " pass replace=True to override it"
        )
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


def even_reference_counts(mask: np.ndarray, n_excluded: int = 1) -> np.ndarray:
    """``mask`` [references, points] with every point given the same number of references.

    Under LiRA's balanced keep matrix every point is a member of exactly k models, so how many
    IN (or OUT) references a point has among the non-target models reveals the target's
    membership; any statistic whose noise depends on that count (a variance, a mean of few
    values) then leaks it. Such counts are recognized by their spread: at most ``n_excluded``
    (the models left out of the references: the target, plus a pseudo-target when calibrating
    on shadows) over all points. Every point is then cut to the smallest count, keeping its
    first references in model order (which depends on the references' membership only), as
    Carlini et al.'s code does. Independent coin-flip memberships give counts independent of
    the target's and are left untouched.
    """
    counts = mask.sum(0)
    if counts.size == 0 or counts.max() - counts.min() > n_excluded or counts.max() == counts.min():
        return mask
    k = int(counts.min())
    if k == 0:
        if n_excluded > 1:  # calibrating a threshold on shadows: best effort, the AUC is unaffected
            return mask
        raise ConfigError(
            "LiRA/RMIA: under a balanced keep matrix some points have no IN or no OUT reference "
            "model, and that count would reveal the target's membership. Use more models or the "
            "default coin-flip keep matrix (population.balanced: false)"
        )
    return mask & (np.cumsum(mask, axis=0) <= k)


# Thresholds calibrated on shadows at the reported FPR levels but the lowest: 0.01% FPR would
# rest on a handful of shadow non-members (the pooled ROC reports it, with its interval).
LOW_FPR_LEVELS = FPR_LEVELS[:-1]


def shadow_thresholds(
    attack: Attack, signals: Signals, target: int, params: dict[str, Any], n_pseudo_targets: int = 4
) -> dict[str, float]:
    """Thresholds chosen on shadow models only: ``decision`` (best balanced accuracy) and, for
    attacks calibrated on shadows, ``fpr@1%`` / ``fpr@0.1%`` (the lowest threshold whose FPR on
    the shadows stays within the level), used for empirical epsilon lower bounds.

    Up to ``n_pseudo_targets`` shadows act in turn as the target; the attack is re-run against
    each with the remaining shadows as references (the real target is excluded entirely), and
    the thresholds come from their pooled, known memberships.
    """
    if attack.threshold == "fixed":
        return {"decision": attack.fixed_threshold}
    refs = references_for(signals, target)
    if len(refs) < 2:
        raise ConfigError(
            f"attack {attack.name}: needs at least 3 models to calibrate a threshold on shadows"
        )
    scores, members = [], []
    for p in refs[:n_pseudo_targets]:
        others = refs[refs != p]
        scores.append(attack.score(signals, int(p), others, **params))
        members.append(signals.keep[p])
    pooled, pooled_members = np.concatenate(scores), np.concatenate(members)
    out = {"decision": best_threshold(pooled, pooled_members)}
    negatives = np.sort(pooled[~pooled_members])
    for level in LOW_FPR_LEVELS:
        # Strictly above the (1 - level) quantile of shadow non-member scores.
        k = int(np.floor(level * len(negatives)))
        top = negatives[len(negatives) - k - 1] if len(negatives) > k else -np.inf
        out[f"fpr@{level * 100:g}%"] = float(np.nextafter(top, np.inf))
    return out


def shadow_threshold(
    attack: Attack, signals: Signals, target: int, params: dict[str, Any], n_pseudo_targets: int = 4
) -> float:
    """The decision threshold of :func:`shadow_thresholds`."""
    return shadow_thresholds(attack, signals, target, params, n_pseudo_targets)["decision"]
