"""How many reference models an audit needs: attack strength against the reference count.

    python benchmarks/attack_strength.py [--config configs/attack_strength_fashion.yaml]
        [--out runs/attack_strength] [--refs 4,8,16] [--targets 8]

Trains (or resumes from its cache) the config's population through the pipeline, then attacks
each of ``--targets`` models with ``R`` references drawn from the other models, for every R,
with online and offline LiRA and RMIA. Per variant, attack and R: TPR at 1% and 0.1% FPR pooled
over the targets, on the canaries and on the rest of the pool, with exact 95% intervals, and the
pooled AUC. Prints JSON (with the machine) and writes it to OUT/attack_strength.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from privquant.attacks import get_attack
from privquant.machine import machine_info
from privquant.membership import MembershipSplit
from privquant.metrics import auc
from privquant.metrics.pooled import tpr_at_fpr_interval
from privquant.pipeline import load_config, run_audit
from privquant.signals import Signals

ATTACKS = ("lira_online", "lira_online_fixed_var", "lira_offline", "lira_offline_fixed_var", "rmia",
           "rmia_online")  # fmt: skip
LEVELS = {"tpr@1%fpr": 0.01, "tpr@0.1%fpr": 0.001}


def subset_models(signals: Signals, models: list[int]) -> Signals:
    """The signals of ``models`` only (the first becomes model 0)."""
    pop = signals.population_logits
    return Signals(signals.logits[models], signals.labels, signals.keep[models],
                   None if pop is None else pop[models], signals.population_labels,
                   {k: v[models] for k, v in signals.extras.items()})  # fmt: skip


def references(n_models: int, target: int, r: int, seed: int) -> list[int]:
    """``r`` of the models other than ``target``, drawn once per (target, r) with ``seed``."""
    others = np.array([m for m in range(n_models) if m != target])
    return sorted(np.random.default_rng([seed, target, r]).permutation(others)[:r].tolist())


def measure(signals: Signals, masks: dict[str, np.ndarray], targets: list[int], r: int,
            attack: str, seed: int) -> dict:  # fmt: skip
    scores = {s: [] for s in masks}
    members = {s: [] for s in masks}
    for t in targets:
        refs = references(signals.n_models, t, r, seed)
        sub = subset_models(signals, [t, *refs])
        sc = np.asarray(
            get_attack(attack).score(sub, 0, np.arange(1, len(refs) + 1)), dtype=np.float64
        )
        for s, mask in masks.items():
            scores[s].append(sc[mask])
            members[s].append(signals.keep[t][mask])
    out = {}
    for s in masks:
        sc, mem = np.concatenate(scores[s]), np.concatenate(members[s])
        out[s] = {
            "auc": auc(sc, mem),
            **{k: tpr_at_fpr_interval(sc, mem, lv) for k, lv in LEVELS.items()},
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/attack_strength_fashion.yaml")
    ap.add_argument("--out", default="runs/attack_strength")
    ap.add_argument("--refs", default="4,8,16")
    ap.add_argument("--targets", type=int, default=8)
    args = ap.parse_args()
    config = load_config(args.config)
    refs = [int(r) for r in args.refs.split(",")]
    if max(refs) >= config.population.n_models:
        sys.exit(
            f"--refs: {max(refs)} references need more than {config.population.n_models} models"
        )
    out_dir = Path(args.out)
    t0 = time.perf_counter()
    run_audit(config, out_dir)
    train_seconds = time.perf_counter() - t0
    split = MembershipSplit.load(out_dir / "split.npz")
    masks = {k: v for k, v in split.canaries.masks(len(split.pool)).items() if k != "all"}
    targets = list(range(args.targets))
    result = {"config": args.config, "targets": targets, "refs": refs, "canaries": split.canaries.count,
              "pool_size": len(split.pool), "n_models": split.n_models, "variants": {}}  # fmt: skip
    t1 = time.perf_counter()
    for variant in config.variants:
        signals = Signals.load(out_dir / "signals" / f"{variant.name}.npz")
        result["variants"][variant.name] = {
            attack: {str(r): measure(signals, masks, targets, r, attack, config.seed) for r in refs}
            for attack in ATTACKS
        }
        print(f"attacked {variant.name}", file=sys.stderr)
    result["seconds"] = {"pipeline": train_seconds, "attacks": time.perf_counter() - t1}
    result["machine"] = machine_info()
    (out_dir / "attack_strength.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "variants"}, indent=1))


if __name__ == "__main__":
    main()
