"""The time budget of ``privquant run --train-only --hours``: per cached step, not only per model."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

import privquant.pipeline.budget as budget
from privquant.population import LocalExecutor


def _land(root: Path, name: str) -> None:
    """A finished cache entry, laid out as ArtifactCache lays it (root/xx/KEY/COMPLETE)."""
    entry = root / name[:2] / name
    entry.mkdir(parents=True)
    (entry / budget.MARKER).write_text("{}")


def test_the_watch_stops_after_the_step_whose_successor_would_not_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [0.0]
    monkeypatch.setattr(budget.time, "monotonic", lambda: clock[0])
    _land(tmp_path, "aa-found")  # already there when the job starts: not a step of it
    (tmp_path / "bb" / "bb-unfinished").mkdir(parents=True)  # no marker: not landed
    watch = budget.StepWatch(tmp_path, deadline=100.0, slowest=0.0)
    clock[0] = 10.0
    assert not watch.check()  # nothing new
    _land(tmp_path, "cc-teacher0")
    assert not watch.check() and (watch.steps, watch.slowest) == (1, 10.0)
    clock[0] = 40.0
    _land(tmp_path, "dd-teacher1")
    assert not watch.check() and watch.slowest == 30.0  # 60 s left >= the slowest step (30 s)
    clock[0] = 75.0
    _land(tmp_path, "ee-teacher2")
    assert watch.check() and watch.steps == 3  # 25 s left < 35 s


def _job_of_steps(root: Path, seconds: float):  # noqa: ANN202
    """A job made of cached steps (a defended model's teachers, then its student)."""

    def job(name: str, steps: int) -> str:
        for i in range(steps):
            time.sleep(seconds)
            _land(root, f"{name}-step{i}")
        return name

    return lambda spec: job(*spec)


def test_a_budget_stops_inside_a_model_once_its_next_step_would_not_fit(tmp_path: Path) -> None:
    # Steps of 1 s, a 3.6 s budget (wide enough that a busy CI host's hiccups do not move a step
    # across a boundary: at 0.5 s / 1.8 s one CI run saw the watch interrupt too late). Model 0
    # (two steps) ends at 2 s. Per model, model 1 (2 s) would not start in the 1.6 s left; per step
    # it starts, lands its first step at 3 s and is stopped there (0.6 s left < 1 s): that step is
    # in the cache, the second never runs.
    jobs = [("m0", 2), ("m1", 2), ("m2", 2)]
    per_model = budget.BudgetExecutor(LocalExecutor(), seconds=3.6)
    with pytest.raises(budget.BudgetReached, match="after 1 jobs in this call, 2 of") as e:
        per_model.map(_job_of_steps(tmp_path / "a", 1.0), jobs, progress=False)
    assert e.value.steps_inside == 0 and budget.cache_entries(tmp_path / "a") == {
        "m0-step0", "m0-step1"
    }  # fmt: skip

    told: list[str] = []
    per_step = budget.BudgetExecutor(LocalExecutor(), seconds=3.6, watch=tmp_path / "b", poll=0.02,
                                     report=told.append)  # fmt: skip
    with pytest.raises(budget.BudgetReached, match="1 cached step of the next, 2 of") as e:
        per_step.map(_job_of_steps(tmp_path / "b", 1.0), jobs, progress=False)
    assert (e.value.done, e.value.steps_inside) == (1, 1)
    # Each step that lands is told as it lands (the progress of a model of many steps), and the
    # last one says the run stops there.
    assert told[-1].startswith("budget: step 1 of this model cached") and told[-1].endswith(
        "stopping here"
    )
    assert len(told) >= 2 and all(m.endswith("going on") for m in told[:-1])
    assert budget.cache_entries(tmp_path / "b") == {"m0-step0", "m0-step1", "m1-step0"}
    assert per_step.slowest_step == pytest.approx(1.0, abs=0.4)

    # The next call finds what landed and starts where it stopped (here with budget to spare).
    again = budget.BudgetExecutor(LocalExecutor(), seconds=60, watch=tmp_path / "b", poll=0.02)

    def resume(spec: tuple[str, int]) -> str:
        name, steps = spec
        done = budget.cache_entries(tmp_path / "b")
        for i in range(steps):
            if f"{name}-step{i}" not in done:
                _land(tmp_path / "b", f"{name}-step{i}")
        return name

    assert again.map(resume, jobs, progress=False) == ["m0", "m1", "m2"]


def test_models_of_one_step_are_budgeted_as_before(tmp_path: Path) -> None:
    # Each model lands one entry as it ends, usually before the watch looks again: the step must
    # still be counted, or the budget would start every model.
    ex = budget.BudgetExecutor(LocalExecutor(), seconds=1.2, watch=tmp_path, poll=10.0)
    with pytest.raises(budget.BudgetReached, match="after 2 jobs in this call, 2 of") as e:
        ex.map(_job_of_steps(tmp_path, 0.5), [("m0", 1), ("m1", 1), ("m2", 1), ("m3", 1)],
               progress=False)  # fmt: skip
    assert e.value.steps_inside == 0 and ex.slowest_step == pytest.approx(0.5, abs=0.2)


def test_a_real_interrupt_is_not_taken_for_the_budget(tmp_path: Path) -> None:
    def job(_: int) -> int:
        raise KeyboardInterrupt  # the user's Ctrl-C

    ex = budget.BudgetExecutor(LocalExecutor(), seconds=60, watch=tmp_path, poll=0.02)
    with pytest.raises(KeyboardInterrupt):
        ex.map(job, [0], progress=False)


def test_the_budget_stops_a_job_started_with_sigint_ignored(tmp_path: Path) -> None:
    # `python -m privquant run ... &` from a script starts with SIGINT ignored; the watch must
    # still stop the job after the step whose successor would not fit, then leave SIGINT ignored.
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        ex = budget.BudgetExecutor(LocalExecutor(), seconds=3.6, watch=tmp_path, poll=0.02)
        with pytest.raises(budget.BudgetReached, match="1 cached step of the next"):
            ex.map(_job_of_steps(tmp_path, 1.0), [("m0", 2), ("m1", 2), ("m2", 2)], progress=False)
        assert budget.cache_entries(tmp_path) == {"m0-step0", "m0-step1", "m1-step0"}
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


def test_a_step_priced_over_the_budget_does_not_start(tmp_path: Path) -> None:
    # Before anything is timed the budget had nothing to go on, so the first step always started:
    # a bf16-pinned sub-teacher on a host without fast bf16 (~3.8 h) would run far past `--hours`.
    ran: list[str] = []
    ex = budget.BudgetExecutor(LocalExecutor(), seconds=60, watch=tmp_path, poll=0.02)
    ex.expect(3 * 3600, 20 * 3600, "bf16+channels_last timed at 30 img/s")
    with pytest.raises(budget.BudgetReached) as e:
        ex.map(ran.append, ["m0", "m1"], progress=False)
    assert ran == [] and (e.value.done, e.value.remaining) == (0, 2)
    assert "the next step is estimated at 3.0 h here (bf16+channels_last timed at 30 img/s)" in (
        str(e.value)
    )


@pytest.mark.parametrize("watched", [True, False])
def test_a_timed_step_replaces_the_estimate(tmp_path: Path, watched: bool) -> None:
    # Priced at 3.3 s a model (the price is a model: runs took 0.8-1.05x of it), each takes 0.5 s.
    # The first starts (3.3 s fit in 3.6); after it the measured 0.5 s decides, so all four run
    # (on the estimate alone the second would not have started: 3.1 s left < 3.3).
    ex = budget.BudgetExecutor(LocalExecutor(), seconds=3.6, watch=tmp_path if watched else None,
                               poll=0.02)  # fmt: skip
    ex.expect(3.3, 3.3, "timed")
    jobs = [(f"m{i}", 1) for i in range(4)]
    assert ex.map(_job_of_steps(tmp_path, 0.5), jobs, progress=False) == ["m0", "m1", "m2", "m3"]


def test_without_a_budget_the_watch_only_tells_the_long_steps_as_they_land(tmp_path: Path) -> None:
    """A model of many long steps (8 sub-teachers and a student: ~3 h on a 2-core host) would
    otherwise show a bar that does not move for hours. Without a budget nothing is stopped and
    SIGINT is left as it is; steps quicker than ``report_over`` are not told."""
    import math

    from privquant.population.executor import ProcessExecutor

    def job(spec: tuple[str, list[float]]) -> str:
        name, durations = spec
        for i, seconds in enumerate(durations):
            time.sleep(seconds)
            _land(tmp_path, f"{name}-step{i}")
        return name

    told: list[str] = []
    ex = budget.BudgetExecutor(LocalExecutor(), math.inf, watch=tmp_path, poll=0.02, report=told.append,
                               report_over=0.35)  # fmt: skip
    before = signal.getsignal(signal.SIGINT)
    jobs = [("m0", [0.7, 0.1, 0.7]), ("m1", [0.1, 0.7])]  # quick steps: 5 looks of the watch
    assert ex.map(job, jobs, desc="models (split_distill)", progress=False) == ["m0", "m1"]
    assert signal.getsignal(signal.SIGINT) is before
    assert len(budget.cache_entries(tmp_path)) == 5
    long_steps = [m for m in told if m.startswith("models (split_distill), ")]
    assert [m.split(": ")[1].split(" cached")[0] for m in long_steps] == [
        "step 1", "step 3", "step 2"
    ], told  # fmt: skip
    assert long_steps[0].startswith("models (split_distill), 1 of 2: step 1 cached after 0.0 min")
    assert long_steps[2].startswith("models (split_distill), 2 of 2: ")

    # Only an in-process executor of one job at a time can tell its steps apart.
    assert isinstance(budget.step_progress(LocalExecutor(), tmp_path), budget.BudgetExecutor)
    pool = ProcessExecutor(2, 1)
    assert budget.step_progress(pool, tmp_path) is pool
