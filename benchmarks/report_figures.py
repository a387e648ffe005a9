"""Time of one report's per-attack figures, with and without the tight crop.

    python benchmarks/report_figures.py [--results docs/results/demo_strict] [--rounds 3]

Renders every ROC and the score histogram of a committed audit, alternating two arms in each
round: as shipped (ROC and histogram with hand-set margins, one draw) and the same figures saved
with ``bbox_inches="tight"`` (a second draw to find the box, as before session 36). Prints JSON
with the seconds of each round and the machine.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from privquant.machine import machine_info
from privquant.report import plots
from privquant.results import AuditResults


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--results", type=Path, default=Path("docs/results/demo_strict"))
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    results = AuditResults.load(args.results)
    shipped = plots._png
    arms = {"tight_crop": lambda fig, **_: shipped(fig, tight=True), "shipped": shipped}
    seconds: dict[str, list[float]] = {name: [] for name in arms}
    try:
        for _ in range(args.rounds):
            for name, png in arms.items():
                plots._png = png
                start = time.perf_counter()
                for attack in results.attack_names:
                    plots.roc_figure(results, attack)
                plots.histogram_figure(results, results.attack_names[0])
                seconds[name].append(round(time.perf_counter() - start, 2))
    finally:
        plots._png = shipped
    print(json.dumps({"results": str(args.results), "figures_per_round": len(results.attack_names) + 1,
                      "seconds": seconds, "machine": machine_info()}, indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
