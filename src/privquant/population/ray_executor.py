"""Jobs as Ray tasks: a population trained (and queried) across the CPUs/GPUs of a cluster.

The shared inputs (the dataset above all) go into Ray's object store once per ``map`` and every
task reads them from there. Tasks write their artifacts into the run's cache folder with the
cache's atomic writes, so on a cluster that folder must be a filesystem every node mounts at the
same path. A task whose worker dies is re-run (``max_retries``); a re-run that finds the
artifact already complete simply returns it, so nothing is built twice or lost.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from tqdm.auto import tqdm

from privquant.errors import ConfigError

J = TypeVar("J")
R = TypeVar("R")


def _require_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "executor.kind: ray needs Ray; install the extra with pip install 'privquant[ray]'"
        ) from None
    return ray


def _run_job(fn: Callable[..., R], job: Any, threads: int, **shared: Any) -> R:
    import torch

    # Each task uses exactly the CPUs it asked for: more threads than reserved cores would
    # oversubscribe the node (torch jobs sharing cores slow each other 10-50x).
    torch.set_num_threads(threads)
    return fn(job, **shared)


class RayExecutor:
    """Runs each job as a Ray task with the requested resources; results in job order."""

    def __init__(
        self,
        address: str | None = None,
        num_cpus: float = 1.0,
        num_gpus: float = 0.0,
        max_retries: int = 3,
    ) -> None:
        self.ray = _require_ray()
        self.address = address
        self.num_cpus, self.num_gpus, self.max_retries = num_cpus, num_gpus, max_retries
        self._stored: dict[int, tuple[Any, Any]] = {}  # id -> (object, its object-store ref)

    def _ref(self, obj: Any) -> Any:
        """One object-store copy per object for the executor's lifetime (every stage reuses it)."""
        hit = self._stored.get(id(obj))
        if hit is None or hit[0] is not obj:
            hit = (obj, self.ray.put(obj))  # holding obj keeps its id from being reused
            self._stored[id(obj)] = hit
        return hit[1]

    def _connect(self) -> None:
        if not self.ray.is_initialized():
            self.ray.init(address=self.address, include_dashboard=False, log_to_driver=False)

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
        self._connect()
        ray = self.ray
        # One object-store copy of each shared input; tasks receive references, not copies.
        shared_refs = {k: self._ref(v) for k, v in (shared or {}).items()}
        task = ray.remote(_run_job).options(
            num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_retries=self.max_retries,
            retry_exceptions=False,
        )  # fmt: skip
        threads = max(1, math.floor(self.num_cpus))
        # Top-level references are resolved by Ray before the task runs (node-local reads).
        refs = [task.remote(fn, job, threads, **shared_refs) for job in jobs]
        index = {ref: i for i, ref in enumerate(refs)}
        results: list[Any] = [None] * len(refs)
        pending = list(refs)
        with tqdm(total=len(refs), desc=desc, unit="job", disable=not progress) as bar:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    results[index[ref]] = ray.get(ref)
                    bar.update(1)
        return results
