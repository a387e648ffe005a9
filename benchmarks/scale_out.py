"""Scale-out: the same population trained locally and on a local Ray instance.

    python benchmarks/scale_out.py [--models 8] [--epochs 10] [--members 2000]

Trains ``--models`` Fashion-MNIST small CNNs (each on ``--members`` rows) three ways, each into
a fresh cache: the local executor (one process, all cores), Ray with one 2-CPU worker, Ray with
two 1-CPU workers. Also measures Ray's scheduling overhead per task (a map of empty tasks) and
checks the trained weights are identical across executors where the thread count matches.
Prints JSON with the machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from pathlib import Path

import torch

from privquant.artifacts import ArtifactCache
from privquant.data import load_dataset
from privquant.machine import machine_info
from privquant.membership import make_split
from privquant.population import LocalExecutor, population_jobs, train_one
from privquant.training import TrainConfig


def _noop(i: int) -> int:
    return i


def _weights_digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update((p / "model.safetensors").read_bytes())
    return h.hexdigest()[:16]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--members", type=int, default=2000)
    args = ap.parse_args()
    import ray

    from privquant.population.ray_executor import RayExecutor

    ds = load_dataset("fashion-mnist")
    split = make_split(len(ds.y_train), len(ds.y_test), 2 * args.members, args.models, 0, seed=0)
    recipe = TrainConfig(epochs=args.epochs, batch_size=128, lr=0.05)
    jobs = population_jobs(split, "small_cnn", recipe)
    out: dict = {"models": args.models, "epochs": args.epochs, "members": args.members}
    digests = {}
    with tempfile.TemporaryDirectory() as tmp:

        def timed(name: str, executor, threads: int | None = None) -> None:  # noqa: ANN001
            before = torch.get_num_threads()
            if threads:
                torch.set_num_threads(threads)
            start = time.perf_counter()
            paths = executor.map(train_one, jobs, desc=name, progress=False,
                                 shared={"ds": ds, "cache": ArtifactCache(Path(tmp) / name)})  # fmt: skip
            seconds = time.perf_counter() - start
            torch.set_num_threads(before)
            out[name] = {
                "seconds": round(seconds, 2),
                "seconds_per_model": round(seconds / args.models, 2),
            }
            digests[name] = _weights_digest(paths)

        timed("local_2_threads", LocalExecutor(), threads=2)
        timed("local_1_thread", LocalExecutor(), threads=1)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        start = time.perf_counter()
        RayExecutor(num_cpus=1).map(_noop, [0], progress=False)  # workers start
        out["ray_first_task_seconds"] = round(time.perf_counter() - start, 2)
        n = 200
        start = time.perf_counter()
        RayExecutor(num_cpus=1).map(_noop, list(range(n)), progress=False)
        out["ray_overhead_ms_per_task"] = round(1000 * (time.perf_counter() - start) / n, 2)
        timed("ray_1_worker_2_cpus", RayExecutor(num_cpus=2))
        timed("ray_2_workers_1_cpu", RayExecutor(num_cpus=1))
        ray.shutdown()
    out["same_weights_1_thread_local_vs_ray_2_workers"] = (
        digests["local_1_thread"] == digests["ray_2_workers_1_cpu"]
    )
    out["same_weights_2_threads_local_vs_ray_1_worker"] = (
        digests["local_2_threads"] == digests["ray_1_worker_2_cpus"]
    )
    out["speedup_ray_2_workers_vs_local"] = round(
        out["local_2_threads"]["seconds"] / out["ray_2_workers_1_cpu"]["seconds"], 2
    )
    out["ray_version"] = ray.__version__
    out["machine"] = machine_info()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
