"""Executors run independent jobs; the local one runs them in order in this process.

On a small CPU, two torch jobs at once slow each other 10-50x, so local work is sequential.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from tqdm.auto import tqdm

J = TypeVar("J")
R = TypeVar("R")


class Executor(Protocol):
    def map(
        self, fn: Callable[[J], R], jobs: Sequence[J], desc: str = "", progress: bool = True
    ) -> list[R]: ...


class LocalExecutor:
    """Runs ``fn`` on each job in order, with a progress bar."""

    def map(
        self, fn: Callable[[J], R], jobs: Sequence[J], desc: str = "", progress: bool = True
    ) -> list[R]:
        return [fn(j) for j in tqdm(jobs, desc=desc, unit="job", disable=not progress)]
