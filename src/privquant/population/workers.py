"""``workers: auto``: how many local processes train this model fastest, measured once per machine.

One process with every thread leaves cores idle on small models (a 62k-parameter LeNet: 22.3 ms
per step alone, about 17 ms per model-step with two single-thread processes), while a large model
may gain nothing. So N processes with cores/N threads each run the model's own training step at
once, for every N that divides the cores, and the count with the highest total images/s wins
(one process unless another count is more than ``MARGIN`` faster). Cached beside the precision
choice (:mod:`privquant.training.precision`).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from privquant.population.executor import available_cores
from privquant.training.config import TrainConfig
from privquant.training.precision import (
    Candidate,
    cpu_share,
    decide_once,
    machine_identity,
    model_signature,
    one_batch,
    start_clock,
    time_candidate,
)

MARGIN = 0.05
SECONDS = 1.0


@dataclass
class WorkersChoice:
    workers: int
    threads: int
    source: str  # measured | cached | configured
    images_per_second: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


CHOICES: dict[str, WorkersChoice] = {}


def _worker(model: nn.Module, x: torch.Tensor, y: torch.Tensor, candidate: Candidate,
            threads: int, barrier: Any, out: Any) -> None:  # fmt: skip
    torch.set_num_threads(threads)
    time_candidate(model, x, y, candidate, seconds=0.0)  # warm-up before the common start
    barrier.wait()
    out.put(time_candidate(model, x, y, candidate, SECONDS))


def measure(model: nn.Module, x: torch.Tensor, y: torch.Tensor, candidate: Candidate,
            workers: int, cores: int) -> float:  # fmt: skip
    """Total images/s of ``workers`` processes training copies of ``model`` at once."""
    threads = max(1, cores // workers)
    if workers == 1:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return time_candidate(model, x, y, candidate, SECONDS)
        finally:
            torch.set_num_threads(before)
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(workers), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(model, x, y, candidate, threads, barrier, out))
             for _ in range(workers)]  # fmt: skip
    for p in procs:
        p.start()
    try:
        total = sum(out.get(timeout=120) for _ in procs)
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
    return total


def choose_workers(
    config: TrainConfig, model: nn.Module, x: torch.Tensor, y: torch.Tensor, name: str = ""
) -> WorkersChoice:
    """The measured best worker count for training ``model`` (config already resolved)."""
    cores = available_cores()
    counts = [n for n in range(1, cores + 1) if cores % n == 0]
    if len(counts) == 1 or (torch.cuda.is_available() and config.device != "cpu"):
        return WorkersChoice(1, cores, "configured")
    xb, yb, batch = one_batch(x, y, config.batch_size)
    candidate = Candidate(
        "bf16" if config.precision == "bf16" else "fp32", config.channels_last is True
    )
    key = hashlib.sha256(json.dumps(["workers", machine_identity(), model_signature(model, xb, batch),
                                     candidate.name, cores]).encode()).hexdigest()  # fmt: skip
    if key in CHOICES:
        return CHOICES[key]

    def from_entry(entry: dict[str, Any]) -> WorkersChoice | None:
        if not isinstance(entry.get("workers"), int):
            return None
        return WorkersChoice(entry["workers"], max(1, cores // entry["workers"]), "cached",
                             dict(entry.get("images_per_second", {})))  # fmt: skip

    def timed() -> tuple[WorkersChoice, dict[str, Any], float]:
        speeds, share = {}, 1.0
        with torch.random.fork_rng(devices=[]):
            for n in counts:
                clock = start_clock()
                speeds[n] = measure(model, xb, yb, candidate, n, cores)
                if n == 1:  # in this process: its share tells whether another job ran too
                    share = cpu_share(clock, threads=cores)
        best = max(speeds, key=speeds.__getitem__)
        if speeds[1] * (1 + MARGIN) >= speeds[best]:
            best = 1
        timings = {str(n): round(s, 1) for n, s in speeds.items()}
        choice = WorkersChoice(best, max(1, cores // best), "measured", timings)
        return choice, {"workers": best, "images_per_second": timings, "model": name}, share

    choice = decide_once(key, from_entry, timed)
    CHOICES[key] = choice
    return choice


def recorded_choices() -> list[dict[str, Any]]:
    return [c.to_dict() for c in CHOICES.values()]
