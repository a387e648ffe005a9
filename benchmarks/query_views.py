"""What more LiRA/RMIA query views buy: attacks on the first k views of one signals file.

    python benchmarks/query_views.py RUN_DIR/signals/fp32.npz --views 1,2,8,18 --targets 0,1,2

The signals must have been collected with at least max(views) query views (population.queries).
Prints JSON: per k, each attack's mean AUC and TPR at 1% / 0.1% FPR over the targets.
"""

from __future__ import annotations

import argparse
import json

from privquant.attacks import run_attacks
from privquant.machine import machine_info
from privquant.signals import Signals

ATTACKS = "lira_online,lira_online_fixed_var,lira_offline_fixed_var,rmia,rmia_online,label_only_augmentation"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("signals")
    p.add_argument("--views", default="1,2,8,18")
    p.add_argument("--targets", default="0,1,2")
    p.add_argument("--attacks", default=ATTACKS)
    args = p.parse_args()
    full = Signals.load(args.signals)
    targets = [int(t) for t in args.targets.split(",")]
    out = {"signals": args.signals, "machine": machine_info(), "targets": targets, "by_views": {}}
    for k in (int(v) for v in args.views.split(",")):
        if k > full.n_queries:
            raise SystemExit(f"{args.signals}: has {full.n_queries} query views, asked for {k}")
        pop = None if full.population_logits is None else full.population_logits[:, :, :k]
        s = Signals(full.logits[:, :, :k], full.labels, full.keep, pop, full.population_labels)
        res = run_attacks(s, targets, args.attacks, n_bootstrap=0, progress=False)
        out["by_views"][k] = {a: {m: round(e["mean"][m], 4) for m in ("auc", "tpr@1%fpr", "tpr@0.1%fpr")}
                              for a, e in res["attacks"].items()}  # fmt: skip
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
