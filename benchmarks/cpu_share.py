"""Does the shared-CPU signal tell an idle machine from a shared one, for small and large models?

``precision: auto``, ``workers: auto`` and the query layout distrust a timing another job shared the
cores with. The signal was the process's own CPU time over wall time x threads, which under-reads
when a model is too small to keep every thread busy (the small CNN read 75% on an idle host, below
the 70% line by a hair). Since session 26 it is what other processes left this one, from
``/proc/stat``. This times real training steps of each model (as ``precision: auto`` does), idle and
then beside ``--competitors`` busy-looping processes, and prints both signals.

    python benchmarks/cpu_share.py [--seconds 1.0] [--competitors 1]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time

import torch

from privquant.machine import machine_info
from privquant.models import build_model
from privquant.training.precision import (
    SHARED_CPU,
    Candidate,
    cpu_share,
    start_clock,
    time_candidate,
)


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _measure(name: str, shape: tuple[int, ...], seconds: float) -> dict[str, float]:
    model = build_model(name, shape, 10)
    x, y = torch.rand(128, *shape), torch.arange(128) % 10
    clock = start_clock()
    rate = time_candidate(model, x, y, Candidate("fp32", False), seconds)
    elapsed = time.perf_counter() - clock.wall
    own = (time.process_time() - clock.own) / elapsed / torch.get_num_threads()
    return {"images_per_s": round(rate, 1), "own_cpu_share": round(own, 3),
            "proc_stat_share": round(cpu_share(clock), 3)}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=1.0)
    p.add_argument("--competitors", type=int, default=1)
    args = p.parse_args()
    models = {"small_cnn": (3, 32, 32), "resnet20": (3, 32, 32)}
    out: dict = {"machine": machine_info(), "threads": torch.get_num_threads(),
                 "shared_line": SHARED_CPU, "competitors": args.competitors, "idle": {}, "shared": {}}  # fmt: skip
    for name, shape in models.items():
        out["idle"][name] = _measure(name, shape, args.seconds)
    ctx = multiprocessing.get_context("spawn")
    for name, shape in models.items():
        procs = [
            ctx.Process(target=_spin, args=(args.seconds * 3 + 5,)) for _ in range(args.competitors)
        ]
        for proc in procs:
            proc.start()
        time.sleep(1.0)  # the competitors are spinning before the timing starts
        try:
            out["shared"][name] = _measure(name, shape, args.seconds)
        finally:
            for proc in procs:
                proc.terminate()
                proc.join()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
