"""Train for a time budget: start no model that would not finish within it.

A study longer than a session fills its cache over several (``privquant run --train-only
--hours H``). Killing a run at the session's end throws away the model it was training; this
executor instead stops *between* models, once the slowest model it trained so far would not
fit in what is left, so every hour spent lands in the cache.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from tqdm.auto import tqdm

from privquant.errors import PrivquantError
from privquant.population import Executor

J = TypeVar("J")
R = TypeVar("R")


class BudgetReached(PrivquantError):
    """The budget ended before every job ran; what ran is in the cache."""

    def __init__(self, done: int, remaining: int, slowest: float, left: float) -> None:
        super().__init__(
            f"time budget: stopped after {done} jobs in this call, {remaining} of this population "
            f"not started (the slowest took {slowest / 60:.0f} min, {max(left, 0) / 60:.0f} min "
            "were left); rerun to go on"
        )
        self.done, self.remaining = done, remaining


class BudgetExecutor:
    """Runs an executor's jobs in rounds of ``round_size`` (its worker count), starting a round
    only if the slowest round so far fits in the budget left."""

    def __init__(self, inner: Executor, seconds: float, round_size: int = 1) -> None:
        if seconds <= 0:
            raise PrivquantError(f"time budget: {seconds:g} s; expected a positive time")
        self.inner, self.round_size = inner, max(1, round_size)
        self.deadline = time.monotonic() + seconds
        self.slowest = 0.0  # the longest round so far (cached models take no time)
        self.done = 0

    def map(
        self,
        fn: Callable[..., R],
        jobs: Sequence[J],
        desc: str = "",
        progress: bool = True,
        shared: dict[str, Any] | None = None,
    ) -> list[R]:
        results: list[R] = []
        with tqdm(total=len(jobs), desc=desc, unit="job", disable=not progress) as bar:
            for start in range(0, len(jobs), self.round_size):
                left = self.deadline - time.monotonic()
                if left <= 0 or self.slowest > left:
                    raise BudgetReached(self.done, len(jobs) - start, self.slowest, left)
                began = time.monotonic()
                chunk = jobs[start : start + self.round_size]
                results += self.inner.map(fn, chunk, desc=desc, progress=False, shared=shared)
                self.slowest = max(self.slowest, time.monotonic() - began)
                self.done += len(chunk)
                bar.update(len(chunk))
        return results

    def close(self) -> None:
        if hasattr(self.inner, "close"):
            self.inner.close()
