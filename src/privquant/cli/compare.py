"""``privquant compare``: what changed between two audits."""

from __future__ import annotations

import argparse
import json

from privquant.metrics import AUC, TPR_1


def _cmd_compare(args: argparse.Namespace) -> int:
    from privquant.results import AuditResults, compare_results

    diff = compare_results(AuditResults.load(args.run_a), AuditResults.load(args.run_b))
    if args.json:
        print(json.dumps(diff, indent=2))
        return 0
    attack = diff["headline_attack"]
    print(f"{'variant':<12} {'test acc (A -> B)':>20}  {attack}: AUC (A -> B)   TPR@1%FPR (A -> B)")
    for r in diff["summary"]:
        acc = " -> ".join("–" if x is None else f"{x:.4f}" for x in r["test_accuracy"])
        auc = " -> ".join(f"{x:.3f}" for x in r.get(AUC, []))
        tpr = " -> ".join(f"{x:.4f}" for x in r.get(TPR_1, []))
        print(f"{r['variant']:<12} {acc:>20}  {auc:>{len(attack) + 16}} {tpr:>20}")
    for side in ("only_in_a", "only_in_b"):
        if diff[side]:
            print(f"variants {side.replace('_', ' ')}: {', '.join(diff[side])}")
    changed = diff["changed"]
    print(f"{len(changed)} of {diff['compared']} values differ (timings and machine aside)")
    for c in changed[: args.show]:
        print(f"  {c['path']}: {c['a']!r} -> {c['b']!r}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("compare", help="what changed between two audits (RUN_A -> RUN_B)")
    c.add_argument("run_a", help="run folder or results.json")
    c.add_argument("run_b", help="run folder or results.json")
    c.add_argument("--show", type=int, default=20, help="list at most this many changed values")
    c.add_argument("--json", action="store_true", help="print every difference as JSON")
    c.set_defaults(func=_cmd_compare)
