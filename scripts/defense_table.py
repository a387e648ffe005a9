"""Print the defense tables of docs/results/defense.md from a run's results.json.

    python scripts/defense_table.py RUN_OR_RESULTS_DIR [VARIANT ...]

One row per variant (all, or those named): bits, bytes, test accuracy (± std over targets),
worst case over every audited attack of TPR@1% and @0.1% FPR (and which attack), the strongest
LiRA/RMIA AUC, label-only AUC, and the paper's Shokri relative reductions vs FP32 for the
adaptive attacker and, where the run has them, the naive one (FP32 shadows). Every number is
read from the file; nothing is computed that the report does not also show.
"""

from __future__ import annotations

import sys
from pathlib import Path

from privquant.results import AuditResults, tradeoff_points

STRONG = ("lira_online", "lira_online_fixed_var", "lira_offline_fixed_var", "rmia", "rmia_online")


def _pct(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}%"


def _shokri(rel: dict | None) -> str:
    if not rel or "shokri" not in rel:
        return "–"
    s = rel["shokri"]
    return " / ".join(f"{100 * s[k]:+.1f}%" for k in ("accuracy", "recall", "f1"))


def _relative(fp, v) -> dict | None:  # noqa: ANN001
    """The paper's (fp - q) / fp for the naive attacker's Shokri metrics."""
    if v is None or "shokri" not in v or "shokri" not in fp.attacks:
        return None
    base, q = fp.attacks["shokri"].mean, v["shokri"].mean
    return {"shokri": {k: (base[k] - q[k]) / base[k] for k in ("accuracy", "recall", "f1")}}


def main() -> None:
    src = Path(sys.argv[1])
    results = AuditResults.load(src if src.is_dir() else src.parent)
    wanted = sys.argv[2:] or list(results.variants)
    points = {p.variant: p for p in tradeoff_points(results)}
    fp = results.variants["fp32"]
    print("| variant | bits | bytes | test acc | worst TPR@1% / @0.1% FPR (attack) | strongest LiRA/RMIA AUC "
          "| label-only AUC | Shokri Δacc / ΔTPR / ΔF1 adaptive | same, naive |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for name in wanted:
        v = results.variants[name]
        p = points.get(name)
        strong = [a for a in STRONG if a in v.attacks]
        auc = max((v.attacks[a].mean["auc"] for a in strong), default=None)
        lo = v.attacks.get("label_only_correctness")
        lo_auc = "–" if lo is None else f"{lo.mean['auc']:.3f}"
        auc_s = "–" if auc is None else f"{auc:.3f}"
        acc = f"{_pct(v.test_accuracy)} ± {100 * (v.test_accuracy_std or 0):.2f}"
        worst = "–" if p is None else (
            f"{_pct(p.tpr_1)} / {_pct(p.tpr_01)} ({p.tpr_1_attack}, {p.tpr_01_attack})"
        )  # fmt: skip
        naive = _shokri(_relative(fp, v.attacks_naive_fp32_shadows)) if name != "fp32" else "–"
        print(f"| {name} | {v.bits:.2f} | {v.size_bytes:,} | {acc} | {worst} | "
              f"{auc_s} | {lo_auc} | "
              f"{_shokri(v.relative_change_vs_fp32) if name != 'fp32' else '–'} | {naive} |")  # fmt: skip
    t = results.timings_seconds
    if t:
        print("\ntimings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in t.items()))


if __name__ == "__main__":
    main()
