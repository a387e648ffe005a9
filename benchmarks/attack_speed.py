"""Speed and peak memory of the whole attack suite on synthetic signals.

    python benchmarks/attack_speed.py [--points 50000 --models 64 --queries 2 --classes 10]

Signals are synthetic (members get a larger true-class margin) because only the array sizes
matter for speed. Prints JSON: seconds per attack (scores + shadow-calibrated threshold), the
metrics with 200 bootstrap resamples, the total, and peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np

from privquant.attacks import ATTACKS, Signals, attack_scores, resolve_attack_names
from privquant.machine import machine_info
from privquant.metrics import evaluate_scores


def synthetic(m: int, n: int, q: int, c: int, seed: int = 0) -> Signals:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    keep = rng.random((m, n)) < 0.5
    logits = rng.standard_normal((m, n, q, c), dtype=np.float32)
    boost = (rng.normal(0, 1.5, n)[None, :, None] + keep[:, :, None] + 2).astype(np.float32)
    idx = np.broadcast_to(labels[None, :, None, None], (m, n, q, 1))
    np.put_along_axis(logits, idx, boost[..., None] + np.take_along_axis(logits, idx, -1), axis=-1)
    # The label-only boundary attack reads the share of 16 noisy copies still classified right.
    robust = (np.round(16 / (1 + np.exp(-boost.mean(-1)))) / 16).astype(np.float32)
    return Signals(logits, labels, keep, extras={"noise_robustness": robust})


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=50_000)
    ap.add_argument("--models", type=int, default=64)
    ap.add_argument("--queries", type=int, default=2)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--bootstrap", type=int, default=200)
    args = ap.parse_args()
    t0 = time.perf_counter()
    signals = synthetic(args.models, args.points, args.queries, args.classes)
    setup_s = time.perf_counter() - t0
    rss_signals = peak_rss_mib()
    per_attack, metric_s = {}, 0.0
    total0 = time.perf_counter()
    for name in resolve_attack_names("all"):
        start = time.perf_counter()
        scores, thr = attack_scores(signals, name, target=0)
        mid = time.perf_counter()
        res = evaluate_scores(
            scores,
            signals.keep[0],
            thr["decision"],
            n_bootstrap=args.bootstrap,
            audit_thresholds=thr,
        )
        end = time.perf_counter()
        metric_s += end - mid
        per_attack[name] = {"attack_s": round(mid - start, 3), "metrics_s": round(end - mid, 3),
                            "auc": round(res["auc"], 4),
                            "peak_rss_mib_so_far": round(peak_rss_mib(), 1)}  # fmt: skip
    total = time.perf_counter() - total0
    print(json.dumps({
        "benchmark": "attack_speed",
        "shape": {"models": args.models, "points": args.points, "queries": args.queries, "classes": args.classes},
        "n_attacks": len(ATTACKS),
        "bootstrap": args.bootstrap,
        "total_seconds": round(total, 2),
        "attack_seconds": round(total - metric_s, 2),
        "metrics_seconds": round(metric_s, 2),
        "signals_setup_seconds": round(setup_s, 2),
        "signals_mib": round(signals.logits.nbytes / 2**20, 1),
        "peak_rss_mib_after_signals": round(rss_signals, 1),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "per_attack": per_attack,
        "machine": machine_info(),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
