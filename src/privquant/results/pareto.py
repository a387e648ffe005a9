"""The privacy-utility-size trade-off of an audit's variants, and which of them are not dominated.

Leakage of a variant is its **worst case** over the audited attacks: the highest TPR at 1% (and
0.1%) FPR any attack reaches against it, so a defense that only hides from one attack (e.g. an
output modification against score-based attacks) is not credited for it.
"""

from __future__ import annotations

from dataclasses import dataclass

from privquant.results.schema import AuditResults


@dataclass(frozen=True)
class TradeoffPoint:
    variant: str
    description: str
    test_accuracy: float
    tpr_1: float  # worst case over attacks, mean over targets
    tpr_1_attack: str
    tpr_01: float
    tpr_01_attack: str
    size_bytes: int
    bits: float
    epsilon: float | None  # DP-SGD's epsilon where the variant has one
    frontier_1: bool = False  # not dominated in (accuracy, TPR@1%)
    frontier_01: bool = False  # not dominated in (accuracy, TPR@0.1%)
    frontier_1_size: bool = False  # not dominated in (accuracy, TPR@1%, bytes)


def _worst(results: AuditResults, name: str, metric: str) -> tuple[float, str]:
    attacks = results.variants[name].attacks
    attack = max(attacks, key=lambda a: attacks[a].mean[metric])
    return attacks[attack].mean[metric], attack


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
        tpr_1, a1 = _worst(results, name, "tpr@1%fpr")
        tpr_01, a01 = _worst(results, name, "tpr@0.1%fpr")
        epsilon = (v.defense_info or {}).get("epsilon")
        points.append(TradeoffPoint(name, v.description, v.test_accuracy, tpr_1, a1, tpr_01, a01, v.size_bytes,
                                    v.bits, epsilon))  # fmt: skip
    flags = {
        "frontier_1": non_dominated([(-p.test_accuracy, p.tpr_1) for p in points]),
        "frontier_01": non_dominated([(-p.test_accuracy, p.tpr_01) for p in points]),
        "frontier_1_size": non_dominated(
            [(-p.test_accuracy, p.tpr_1, float(p.size_bytes)) for p in points]
        ),
    }
    return [
        TradeoffPoint(**{**p.__dict__, **{k: v[i] for k, v in flags.items()}})
        for i, p in enumerate(points)
    ]
