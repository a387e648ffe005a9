"""Train for a time budget: start no model that would not finish within it.

A study longer than a session fills its cache over several (``privquant run --train-only
--hours H``). Killing a run at the session's end throws away the model it was training; this
executor instead stops *between* models, once the slowest model it trained so far would not
fit in what is left, so every hour spent lands in the cache.

A model can be made of steps that land in the cache on their own (a defended model's teachers:
split self-distillation at 12,500 members is 4 teachers and a student, about an hour on a 2-core
host, each step 12-14 min). Stopping only between models would then leave up to a whole model's
time unused, so with ``watch`` (the cache folder) the executor also counts finished cache
entries: a model starts when the slowest *step* so far fits, and inside a model it stops right
after a step lands if the slowest step would not fit in what is left. The next call finds the
finished steps in the cache and goes on from there.

Without a budget (``seconds=inf``, :func:`step_progress`) the same watch only shows progress: a
model of many long steps (8 sub-teachers and a student, ~3 h on a 2-core host) otherwise shows a
bar that does not move for hours; each step over a minute is told as it lands.

Before any step has run, "the slowest step so far" is a price: ``train_only`` tells the budget
(:meth:`BudgetExecutor.expect`) what a step and a model of each population should take, from
training steps timed here in that population's precision. Without it the first step always
started, however long: a bf16-pinned sub-teacher on a host without fast bf16 takes hours.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from tqdm.auto import tqdm

from privquant.artifacts import ArtifactCache
from privquant.errors import PrivquantError
from privquant.population import Executor

J = TypeVar("J")
R = TypeVar("R")

MARKER = ArtifactCache.MARKER  # an entry is whole once it has one


class BudgetReached(PrivquantError):
    """The budget ended before every job ran; what ran is in the cache."""

    def __init__(
        self,
        done: int,
        remaining: int,
        slowest: float,
        left: float,
        steps_inside: int = 0,
        unit: str = "job",
        estimate: str = "",
    ) -> None:
        inside = (
            f" and {steps_inside} cached step{'s' * (steps_inside != 1)} of the next"
            if steps_inside
            else ""
        )
        why = (
            f"the next {unit} is estimated at {_minutes(slowest)} here ({estimate})"
            if estimate
            else f"the slowest {unit} took {_minutes(slowest)}"
        )
        super().__init__(
            f"time budget: stopped after {done} jobs in this call{inside}, {remaining} of this "
            f"population not finished ({why}, {_minutes(max(left, 0))} were left); rerun to go on"
        )
        self.done, self.remaining, self.steps_inside = done, remaining, steps_inside


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def cache_entries(root: Path) -> set[str]:
    """Names of the finished entries of an ``ArtifactCache`` folder (``root/xx/KEY/COMPLETE``)."""
    with contextlib.suppress(OSError):
        return {
            entry.name
            for shard in os.scandir(root)
            if shard.is_dir()
            for entry in os.scandir(shard.path)
            if os.path.isfile(os.path.join(entry.path, MARKER))
        }
    return set()


class StepWatch:
    """Watches a cache folder while one job runs; once a new entry lands and the slowest step
    so far would not fit before ``deadline``, it interrupts the main thread (as Ctrl-C does:
    the job's unfinished step is dropped, its finished ones stay in the cache)."""

    def __init__(
        self,
        root: Path,
        deadline: float,
        slowest: float,
        poll: float = 5.0,
        report: Callable[[str], None] | None = None,
        label: str = "",
        report_over: float = 0.0,
    ) -> None:
        self.root, self.deadline, self.slowest, self.poll = root, deadline, slowest, poll
        self.report = report  # told of each step as it lands: a model of many steps shows progress
        self.label = label  # which model of the call, for the report
        self.report_over = report_over  # quicker steps are not told (their bar moves fast enough)
        self.budgeted = math.isfinite(deadline)  # else progress only: it never interrupts
        self.seen = cache_entries(root)
        self.last = time.monotonic()
        self.steps = 0  # entries that landed during this job
        self.fired = False
        self.finished = False  # the job returned: never interrupt after that
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="privquant-budget", daemon=True)

    def check(self) -> bool:
        """One look at the cache; True when the job should stop now."""
        now_seen = cache_entries(self.root)
        if not now_seen - self.seen:
            return False
        self.seen = now_seen
        now = time.monotonic()
        took = now - self.last
        self.slowest = max(self.slowest, took)
        self.last, self.steps = now, self.steps + 1
        stop = self.deadline - now < self.slowest
        if self.report is None:
            return stop
        if not self.budgeted:  # progress only
            if took >= self.report_over:
                self.report(f"{self.label}step {self.steps} cached after {took / 60:.1f} min")
        else:
            self.report(
                f"budget: step {self.steps} of this model cached after {took / 60:.1f} min; "
                f"{max(self.deadline - now, 0) / 60:.0f} min left, the slowest step took "
                f"{self.slowest / 60:.1f} min: {'stopping here' if stop else 'going on'}"
            )
        return stop

    def _loop(self) -> None:
        while not self._stop.wait(self.poll):
            if self.check():
                with self._lock:
                    if self.finished:
                        return
                    self.fired = True
                _interrupt_main()
                return

    def __enter__(self) -> StepWatch:
        # A job started in the background by a shell without job control (`cmd &` in a script,
        # the usual way to run a long study) inherits SIGINT ignored, and Python then installs no
        # KeyboardInterrupt handler: the watch's interrupt would be dropped and the step after the
        # budget would run anyway (seen in session 29). Take SIGINT while watching, as Ctrl-C.
        self._ignored_sigint = False
        if self.budgeted and threading.current_thread() is threading.main_thread():
            self._ignored_sigint = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
            if self._ignored_sigint:
                signal.signal(signal.SIGINT, signal.default_int_handler)
        self._thread.start()
        return self

    def job_returned(self) -> None:
        with self._lock:
            self.finished = True

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self._ignored_sigint:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def _interrupt_main() -> None:
    # A real SIGINT wakes a main thread blocked in a system call; _thread.interrupt_main would
    # only be seen once that call returned.
    if hasattr(signal, "pthread_kill"):
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # type: ignore[arg-type]
    else:  # pragma: no cover (Windows)
        import _thread

        _thread.interrupt_main()


class BudgetExecutor:
    """Runs an executor's jobs in rounds of ``round_size`` (its worker count), starting a round
    only if the slowest round so far fits in the budget left.

    ``watch``: the cache folder the jobs write to. With one worker in the main thread, the
    budget is then judged per cached step, not per job (the module's docstring says how)."""

    def __init__(
        self,
        inner: Executor,
        seconds: float,
        round_size: int = 1,
        watch: str | os.PathLike[str] | None = None,
        poll: float = 5.0,
        report: Callable[[str], None] | None = None,
        report_over: float = 0.0,
    ) -> None:
        if not seconds > 0:  # inf: no budget, the watch only shows progress (step_progress)
            raise PrivquantError(f"time budget: {seconds:g} s; expected a positive time")
        self.inner, self.round_size = inner, max(1, round_size)
        self.deadline = time.monotonic() + seconds
        self.slowest = 0.0  # the longest round so far (cached models take no time)
        self.slowest_step = 0.0  # the longest time between two cache entries inside a job
        self.done = 0
        self.watch = Path(watch) if watch is not None else None
        self.poll = poll
        self.report = report  # None: tqdm.write while the bar shows, silent without it
        self.report_over = report_over  # steps quicker than this are not told
        # What the next population's steps and models should take here before any has been timed
        # (see expect); a measured step or round replaces them.
        self.expected_step = self.expected_job = 0.0
        self.expected_why = ""

    def expect(self, step: float, job: float, why: str) -> None:
        """Seconds of one step and of one job of the next ``map``, priced from a timing here
        (``why`` says which): without them the first step always started, even one longer than
        the whole budget (a bf16-pinned sub-teacher on a host without fast bf16: ~3.8 h)."""
        self.expected_step, self.expected_job, self.expected_why = step, job, why

    def _watching(self) -> bool:
        # Steps are told apart by when entries land: that needs one job at a time, and the
        # interrupt that stops a job needs this to be the main thread (where Python handles it).
        return (
            self.watch is not None
            and self.round_size == 1
            and threading.current_thread() is threading.main_thread()
        )

    def map(
        self,
        fn: Callable[..., R],
        jobs: Sequence[J],
        desc: str = "",
        progress: bool = True,
        shared: dict[str, Any] | None = None,
    ) -> list[R]:
        results: list[R] = []
        watching = self._watching()
        with tqdm(total=len(jobs), desc=desc, unit="job", disable=not progress) as bar:
            for start in range(0, len(jobs), self.round_size):
                left = self.deadline - time.monotonic()
                measured = self.slowest_step if watching else self.slowest
                expected = self.expected_step if watching else self.expected_job
                need = max(measured, expected)
                if left <= 0 or need > left:
                    unit = "step" if watching else "job"
                    why = self.expected_why if expected > measured else ""
                    raise BudgetReached(
                        self.done, len(jobs) - start, need, left, unit=unit, estimate=why
                    )
                began = time.monotonic()
                chunk = jobs[start : start + self.round_size]
                if watching:
                    report = self.report or (tqdm.write if progress else None)
                    label = f"{desc or 'jobs'}, {start + 1} of {len(jobs)}: "
                    results += self._run_watched(fn, chunk, desc, shared, len(jobs) - start, report,
                                                 label)  # fmt: skip
                else:
                    results += self.inner.map(fn, chunk, desc=desc, progress=False, shared=shared)
                took = time.monotonic() - began
                self.slowest = max(self.slowest, took)
                if not watching and took > 0.1 * self.expected_job:  # trained, not found cached
                    self.expected_step = self.expected_job = 0.0  # timed: the estimate is done
                self.done += len(chunk)
                bar.update(len(chunk))
        return results

    def _run_watched(
        self,
        fn: Callable[..., R],
        chunk: Sequence[J],
        desc: str,
        shared: dict[str, Any] | None,
        remaining: int,
        report: Callable[[str], None] | None,
        label: str = "",
    ) -> list[R]:
        assert self.watch is not None
        step = StepWatch(self.watch, self.deadline, self.slowest_step, self.poll, report, label,
                         self.report_over)  # fmt: skip
        try:
            with step:
                out = self.inner.map(fn, chunk, desc=desc, progress=False, shared=shared)
                step.job_returned()
                if step.fired:  # the interrupt is on its way: take it here, not in the caller
                    time.sleep(self.poll + 1)
        except KeyboardInterrupt:
            if not step.fired:
                raise
            self.slowest_step = step.slowest
            left = self.deadline - time.monotonic()
            if step.finished:  # the step that stopped it was the job's last
                self.done += len(chunk)
                raise BudgetReached(
                    self.done, remaining - len(chunk), step.slowest, left, unit="step"
                ) from None
            raise BudgetReached(
                self.done, remaining, step.slowest, left, step.steps, unit="step"
            ) from None
        step.check()  # the job's last entry often lands between two looks of the watch
        # A job that lands no entry of its own (found whole in the cache) says nothing of steps.
        if step.steps:
            self.slowest_step = max(step.slowest, time.monotonic() - step.last)
            self.expected_step = self.expected_job = 0.0  # timed: the estimate is done
        return out

    def close(self) -> None:
        if hasattr(self.inner, "close"):
            self.inner.close()


# Steps quicker than this need no line of their own: the bar moves often enough.
PROGRESS_REPORT_OVER = 60.0


def step_progress(inner: Executor, watch: str | os.PathLike[str]) -> Executor:
    """``inner`` with each step of its jobs that lands in the cache ``watch`` told as it lands
    (steps over a minute), without a budget. Only an in-process executor of one job at a time
    can tell its steps apart; any other is returned as it is (a pool schedules its jobs freely)."""
    from privquant.population import LocalExecutor

    if type(inner) is not LocalExecutor:
        return inner
    return BudgetExecutor(inner, math.inf, watch=watch, report_over=PROGRESS_REPORT_OVER)
