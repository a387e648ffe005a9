"""Executors run independent jobs; the local one runs them in order in this process.

On a small CPU, two torch jobs at once slow each other 10-50x, so local work is sequential.
Ray (:mod:`privquant.population.ray_executor`, the ``privquant[ray]`` extra) spreads them over
a cluster. Every executor calls ``fn(job, **shared)``: ``shared`` holds the big read-only
inputs (the dataset, the cache handle) that a distributed executor ships once, not per job.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

J = TypeVar("J")
R = TypeVar("R")


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


class ExecutorConfig(BaseModel):
    """Where the jobs of a run (model training, transforms, signal extraction) execute."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["local", "ray"] = Field(
        "local", description="local: in this process; ray: Ray tasks (pip install 'privquant[ray]')"
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

    def build(self) -> Executor:
        if self.kind == "local":
            return LocalExecutor()
        from privquant.population.ray_executor import RayExecutor

        return RayExecutor(self.address, self.num_cpus, self.num_gpus, self.max_retries)
