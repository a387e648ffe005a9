"""Executors run independent jobs: in this process, in local worker processes, or on Ray.

Two torch jobs that each use every core slow each other 10-50x, so parallel local work splits
the cores: ``workers: N`` runs N processes with cores/N torch threads each (small models train
faster that way than one process with every thread). Ray
(:mod:`privquant.population.ray_executor`, the ``privquant[ray]`` extra) spreads jobs over a
cluster. Every executor calls ``fn(job, **shared)``: ``shared`` holds the big read-only inputs
(the dataset, the cache handle) that a process executor ships once per worker, not per job.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from tqdm.auto import tqdm

J = TypeVar("J")
R = TypeVar("R")

STACK_AUTO_CUDA = 32  # models trained at once on a GPU with ``stack: auto``


class Executor(Protocol):
    def map(
        self,
        fn: Callable[..., R],
        jobs: Sequence[J],
        desc: str = "",
        progress: bool = True,
        shared: dict[str, Any] | None = None,
    ) -> list[R]: ...


class LocalExecutor:
    """Runs ``fn`` on each job in order, with a progress bar."""

    def map(
        self,
        fn: Callable[..., R],
        jobs: Sequence[J],
        desc: str = "",
        progress: bool = True,
        shared: dict[str, Any] | None = None,
    ) -> list[R]:
        shared = shared or {}
        return [fn(j, **shared) for j in tqdm(jobs, desc=desc, unit="job", disable=not progress)]


class ProcessExecutor:
    """Runs jobs in ``workers`` spawned processes, each with ``threads`` torch threads.

    Results come back in job order. A job gives the same numbers as in one process with the same
    thread count (torch's float reductions depend on the thread count in the last bits). Workers
    ignore Ctrl-C: the parent stops them and what they finished is in the cache, so a rerun
    resumes from there as after a sequential run's interruption.
    """

    def __init__(self, workers: int, threads: int) -> None:
        self.workers, self.threads = workers, threads
        self._pool: ProcessPoolExecutor | None = None
        self._shared: dict[str, Any] = {}

    def _pool_for(self, shared: dict[str, Any]) -> ProcessPoolExecutor:
        """The worker pool, started once and kept while the shared inputs are the same objects
        (each stage of a run reuses it: no second torch import, no second dataset copy)."""
        same = self._shared.keys() == shared.keys() and all(
            self._shared[k] is v for k, v in shared.items()
        )
        if self._pool is None or not same:
            self.close()
            plugins = [(n, m.__file__) for n, m in sys.modules.items()
                       if n.startswith("privquant_plugin_") and getattr(m, "__file__", None)]  # fmt: skip
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(self.threads, shared, plugins),
            )
            self._shared = dict(shared)
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._pool, self._shared = None, {}

    def map(
        self,
        fn: Callable[..., R],
        jobs: Sequence[J],
        desc: str = "",
        progress: bool = True,
        shared: dict[str, Any] | None = None,
    ) -> list[R]:
        if not jobs:
            return []
        pool = self._pool_for(shared or {})
        results: list[Any] = [None] * len(jobs)
        try:
            futures = {pool.submit(_run_in_worker, fn, job): i for i, job in enumerate(jobs)}
            with tqdm(total=len(jobs), desc=desc, unit="job", disable=not progress) as bar:
                for done in as_completed(futures):
                    results[futures[done]] = done.result()
                    bar.update(1)
        except Exception:
            # A failed job: the queued ones are dropped, the running ones finish (their work is
            # valid and lands in the cache), then the error surfaces.
            pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
            raise
        except BaseException:  # Ctrl-C: stop now; a killed job's temp folder is swept on rerun
            for proc in list((getattr(pool, "_processes", None) or {}).values()):
                proc.terminate()
            pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
            raise
        return results


_WORKER_SHARED: dict[str, Any] = {}


def _init_worker(threads: int, shared: dict[str, Any], plugins: list[tuple[str, str]]) -> None:
    import importlib.util
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    torch.set_num_threads(threads)
    for name, path in plugins:  # a config's plugin models and defenses, registered again
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is not None and spec.loader is not None and name not in sys.modules:
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
    _WORKER_SHARED.update(shared)


def _run_in_worker(fn: Callable[..., R], job: Any) -> R:
    return fn(job, **_WORKER_SHARED)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class ExecutorConfig(BaseModel):
    """Where the jobs of a run (model training, transforms, signal extraction) execute."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["local", "ray"] = Field(
        "local",
        description="local: this machine (see workers); ray: Ray tasks (pip install 'privquant[ray]')",
    )
    workers: int | Literal["auto"] = Field(
        1,
        description="local: processes training and querying models at once, the cores split "
        "between them; 1: in this process; auto: measured per machine and model",
    )
    stack: int | Literal["auto"] = Field(
        "auto",
        description="plain models of one architecture and recipe trained at once as one stacked "
        f"network (torch.func); auto: up to {STACK_AUTO_CUDA} on CUDA, 1 on CPU (each model alone: "
        "stacking measured no faster there)",
    )
    address: str | None = Field(
        None,
        description="ray: cluster address ('auto', 'ray://head:10001'); None starts a local one",
    )
    num_cpus: float = Field(
        1.0, gt=0, description="ray: CPUs each task requests (its torch threads)"
    )
    num_gpus: float = Field(0.0, ge=0, description="ray: GPUs each task requests")
    max_retries: int = Field(3, ge=0, description="ray: re-runs of a task whose worker died")

    @field_validator("workers", "stack")
    @classmethod
    def _positive(cls, v: int | str, info: ValidationInfo) -> int | str:
        if v != "auto" and v < 1:
            raise ValueError(f"{info.field_name} must be at least 1 (or auto)")
        return v

    def stack_size(self, device: str = "auto") -> int:
        """How many models train at once on ``device`` (a TrainConfig device name)."""
        if self.stack != "auto":
            return self.stack

        from privquant.training.device import resolve_device

        return STACK_AUTO_CUDA if resolve_device(device).type == "cuda" else 1

    def build(self, workers: int | None = None) -> Executor:
        """The executor; ``workers`` overrides ``auto`` with a measured count."""
        if self.kind == "local":
            n = workers if workers is not None else (1 if self.workers == "auto" else self.workers)
            if n <= 1:
                return LocalExecutor()
            return ProcessExecutor(n, max(1, available_cores() // n))
        from privquant.population.ray_executor import RayExecutor

        return RayExecutor(self.address, self.num_cpus, self.num_gpus, self.max_retries)
