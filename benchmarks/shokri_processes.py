"""The Shokri attack's per-class classifier fits in this process vs shared by worker processes.

    python benchmarks/shokri_processes.py [--rounds 3]

Two shapes: the quick demo's (8 models, 2,000-point pool, 10 classes) and the size-3 study's (8
models, 25,000 points). Each round times one target's scores with ``jobs=1`` (the fits one after
another here) and with ``jobs=None`` (every core); the first pooled call, which starts the worker
processes, is reported apart. Checks that both give the same scores to the last bit. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from attack_speed import synthetic
from privquant.attacks.shokri import shokri_score
from privquant.machine import machine_info
from privquant.population.executor import available_cores


def timed(signals, refs: np.ndarray, jobs: int | None) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    scores = shokri_score(signals, 0, refs, jobs=jobs)
    return time.perf_counter() - start, scores


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    out = {"benchmark": "shokri_processes", "cores": available_cores(), "rounds": args.rounds,
           "shapes": {}}  # fmt: skip
    first_pooled = None
    for label, points in (("demo_quick", 2_000), ("size3", 25_000)):
        signals = synthetic(8, points, 2, 10)
        refs = np.arange(1, 8)
        if first_pooled is None:  # starts the workers: paid once per process
            first_pooled = round(timed(signals, refs, None)[0], 3)
        serial, pooled, same = [], [], True
        for _ in range(args.rounds):
            t1, s1 = timed(signals, refs, 1)
            t2, s2 = timed(signals, refs, None)
            serial.append(t1)
            pooled.append(t2)
            same = same and bool(np.array_equal(s1, s2))
        out["shapes"][label] = {
            "models": 8, "points": points, "classes": 10,
            "serial_s": [round(t, 3) for t in serial], "pooled_s": [round(t, 3) for t in pooled],
            "speedup_median": round(float(np.median(serial) / np.median(pooled)), 2),
            "identical_scores": same,
        }  # fmt: skip
    out["first_pooled_call_s"] = first_pooled
    out["machine"] = machine_info()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
