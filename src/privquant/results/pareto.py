"""The privacy-utility-size trade-off of an audit's variants, and which of them are not dominated.

Leakage of a variant is its **worst case** over the audited attacks: the highest TPR at 1% (and
0.1%) FPR any attack reaches against it, so a defense that only hides from one attack (e.g. an
output modification against score-based attacks) is not credited for it. It is read on the
canaries (worst-case points) when the audit planted them, and on the rest of the pool beside
them, from ROC curves pooled over every target, each with its exact interval.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from privquant.metrics.evaluate import FPR_LEVELS, fpr_key
from privquant.metrics.pooled import MIN_EXPECTED_FP
from privquant.results.schema import AttackResult, AuditResults

FPR_BY_KEY = {fpr_key(level): level for level in FPR_LEVELS}


@dataclass(frozen=True)
class Leak:
    """The worst case over attacks of one TPR at one FPR level on one subset of the pool."""

    value: float
    ci: tuple[float, float] | None  # exact interval of the pooled ROC (None: legacy results)
    attack: str
    resolved: bool  # at least 10 expected false positives at this level
    n_negatives: int | None  # the non-members this level rests on (pooled over targets)

    def text(self, digits: int = 1) -> str:
        """``12.3% [10.1, 14.8]``, with ``(unresolved)`` where the level rests on too few points."""
        out = f"{100 * self.value:.{digits}f}%"
        if self.ci is not None:
            out += f" [{100 * self.ci[0]:.{digits}f}, {100 * self.ci[1]:.{digits}f}]"
        return out + ("" if self.resolved else " (unresolved)")


@dataclass(frozen=True)
class TradeoffPoint:
    """One variant on the privacy-utility-size plane. ``lead_subset`` is where worst-case
    leakage is read (``canaries`` when the audit planted them, else ``all``); ``population_*``
    is read on every non-canary point (``all`` without canaries)."""

    variant: str
    description: str
    test_accuracy: float
    lead_subset: str
    worst_1: Leak  # lead subset, TPR at 1% FPR
    worst_01: Leak  # lead subset, TPR at 0.1% FPR
    population_1: Leak
    population_01: Leak
    size_bytes: int
    bits: float
    epsilon: float | None  # DP-SGD's epsilon where the variant has one
    frontier_1: bool = False  # not dominated in (accuracy, worst-case TPR@1%)
    frontier_01: bool = False  # not dominated in (accuracy, population TPR@0.1%)
    frontier_1_size: bool = False  # not dominated in (accuracy, worst-case TPR@1%, bytes)

    @property
    def tpr_1(self) -> float:
        return self.worst_1.value

    @property
    def tpr_1_attack(self) -> str:
        return self.worst_1.attack

    @property
    def tpr_01(self) -> float:
        return self.population_01.value

    @property
    def tpr_01_attack(self) -> str:
        return self.population_01.attack


def attack_leak(result: AttackResult, subset: str, key: str, attack: str) -> Leak:
    """One attack's TPR at ``key`` on ``subset``: pooled over targets with its interval, or the
    mean over targets for results written before pooling existed."""
    if subset in result.pooled and key in result.pooled[subset].tpr:
        t = result.pooled[subset].tpr[key]
        return Leak(t.value, (t.ci[0], t.ci[1]), attack, t.resolved, t.n_negatives)
    level = FPR_BY_KEY[key]
    n_neg = min(int(r.get("n_nonmembers", 0)) for r in result.per_target.values())
    return Leak(result.mean[key], None, attack, level * n_neg >= MIN_EXPECTED_FP, n_neg)


def worst_leak(attacks: dict[str, AttackResult], subset: str, key: str) -> Leak:
    """The attack reaching the highest TPR at ``key`` on ``subset`` (where it is measured)."""
    leaks = [attack_leak(r, subset, key, a) for a, r in attacks.items()]
    return max(leaks, key=lambda leak: leak.value)


def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """``a`` is at least as good as ``b`` everywhere and better somewhere (all minimized)."""
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(
        x < y for x, y in zip(a, b, strict=True)
    )


def non_dominated(objectives: list[tuple[float, ...]]) -> list[bool]:
    """For each point (every objective minimized), whether no other point dominates it."""
    return [not any(dominates(o, p) for o in objectives) for p in objectives]


def tradeoff_points(results: AuditResults) -> list[TradeoffPoint]:
    """One point per variant with test accuracy and attacks, frontier flags filled in."""
    points = []
    for name, v in results.variants.items():
        if v.test_accuracy is None or not v.attacks:
            continue
        first = next(iter(v.attacks.values()))
        lead, population = first.lead_subset(), first.population_subset()
        epsilon = (v.defense_info or {}).get("epsilon")
        points.append(TradeoffPoint(name, v.description, v.test_accuracy, lead,
                                    worst_leak(v.attacks, lead, "tpr@1%fpr"),
                                    worst_leak(v.attacks, lead, "tpr@0.1%fpr"),
                                    worst_leak(v.attacks, population, "tpr@1%fpr"),
                                    worst_leak(v.attacks, population, "tpr@0.1%fpr"),
                                    v.size_bytes, v.bits, epsilon))  # fmt: skip
    flags = {
        "frontier_1": non_dominated([(-p.test_accuracy, p.tpr_1) for p in points]),
        "frontier_01": non_dominated([(-p.test_accuracy, p.tpr_01) for p in points]),
        "frontier_1_size": non_dominated(
            [(-p.test_accuracy, p.tpr_1, float(p.size_bytes)) for p in points]
        ),
    }
    return [replace(p, **{k: v[i] for k, v in flags.items()}) for i, p in enumerate(points)]
