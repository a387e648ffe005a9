"""What changed between two audits: every number of results.json, timings and machine aside."""

from __future__ import annotations

from typing import Any

from privquant.metrics import AUC, TPR_01, TPR_1
from privquant.results.schema import AuditResults

IGNORED = {"timings_seconds", "machine", "seconds", "privquant_version", "commit"}


def _leaves(obj: Any, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    if isinstance(obj, dict):
        out: dict[tuple[str, ...], Any] = {}
        for k, v in obj.items():
            if k not in IGNORED:
                out.update(_leaves(v, (*path, str(k))))
        return out
    if isinstance(obj, list):
        out = {}
        for i, v in enumerate(obj):
            out.update(_leaves(v, (*path, str(i))))
        return out
    return {path: obj}


def compare_results(a: AuditResults, b: AuditResults) -> dict[str, Any]:
    """Every leaf of the two results that differs, and a per-variant headline summary."""
    la, lb = _leaves(a.model_dump(mode="json")), _leaves(b.model_dump(mode="json"))
    changed = [
        {"path": ".".join(k), "a": la.get(k), "b": lb.get(k)}
        for k in sorted(set(la) | set(lb))
        if la.get(k) != lb.get(k)
    ]
    attack = a.headline_attack()
    summary = []
    for name in [n for n in a.variants if n in b.variants]:
        va, vb = a.variants[name], b.variants[name]
        row: dict[str, Any] = {
            "variant": name,
            "test_accuracy": [va.test_accuracy, vb.test_accuracy],
        }
        if attack in va.attacks and attack in vb.attacks:
            for k in (AUC, TPR_1, TPR_01):
                row[k] = [va.attacks[attack].mean[k], vb.attacks[attack].mean[k]]
        summary.append(row)
    return {
        "headline_attack": attack,
        "compared": len(set(la) | set(lb)),
        "changed": changed,
        "only_in_a": sorted(set(a.variants) - set(b.variants)),
        "only_in_b": sorted(set(b.variants) - set(a.variants)),
        "summary": summary,
    }
