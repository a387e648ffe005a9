"""Parallel local workers: the numbers of one process, both cores busy, interruptions resumable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import EXECUTOR_TRAIN, result_numbers
from privquant.artifacts import ArtifactCache
from privquant.data import load_dataset
from privquant.errors import ConfigError
from privquant.membership import make_split
from privquant.pipeline import load_config, run_audit
from privquant.population import population_jobs, train_one
from privquant.population import workers as wk
from privquant.population.executor import ExecutorConfig, ProcessExecutor
from privquant.training import TrainConfig

SMALL = {
    "name": "workers",
    "data": {"name": "digits", "pool_size": 400, "reference_size": 100},
    "model": {"name": "mlp", "options": {"hidden": [64]}},
    "train": EXECUTOR_TRAIN,
    "population": {"n_models": 4, "queries": 1},
    "variants": [
        {"name": "fp32", "method": "none"},
        {"name": "ptq4", "method": "ptq", "quant": {"weight_bits": 4, "first_last_bits": None}},
        {"name": "distilled", "steps": [{"method": "split_distill", "teachers": 2}]},
    ],
    "attacks": ["loss", "rmia"],
    "bootstrap": 20,
}


def test_two_workers_give_the_numbers_of_one_process_at_the_same_threads(tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # each of the two workers below gets 2 cores // 2 = 1 thread
    try:
        run_audit(load_config(SMALL), tmp_path / "one", progress=False)
    finally:
        torch.set_num_threads(threads)
    parallel = {**SMALL, "executor": {"kind": "local", "workers": 2}}
    res = run_audit(load_config(parallel), tmp_path / "two", progress=False)
    assert res.machine["workers"] == {"workers": 2, "source": "configured"}
    assert result_numbers(tmp_path / "two") == result_numbers(tmp_path / "one")

    def entries(run: str) -> set[str]:
        return {
            p.name for p in (tmp_path / run / "cache").glob("*/*") if not p.name.startswith(".")
        }

    # The same artifacts (plain, distilled, ptq4-deployed models, teacher logits) under the same
    # keys, each once, and nothing half-built.
    assert entries("two") == entries("one") and len(entries("one")) >= 12
    assert not list((tmp_path / "two" / "cache").glob("*/.*"))


def _fail_on_two(job, ds, cache):  # noqa: ANN001, ANN202
    if job.index == 2:
        raise RuntimeError("model 2 failed")
    return train_one(job, ds, cache)


def test_a_failed_job_stops_the_pool_and_a_rerun_keeps_what_finished(tmp_path: Path) -> None:
    ds = load_dataset("digits")
    split = make_split(len(ds.y_train), len(ds.y_test), 300, 4, 0, seed=0)
    jobs = population_jobs(split, "mlp", TrainConfig(epochs=2, batch_size=32), {"hidden": [16]})
    cache = ArtifactCache(tmp_path / "cache")
    executor = ProcessExecutor(workers=2, threads=1)
    with pytest.raises(RuntimeError, match="model 2 failed"):
        executor.map(_fail_on_two, jobs, progress=False, shared={"ds": ds, "cache": cache})
    done = {p.parent.name for p in (tmp_path / "cache").glob("*/*/COMPLETE")}
    assert 1 <= len(done) <= 3  # the others finished or were cancelled, nothing half-written
    assert not [p for p in (tmp_path / "cache").glob("*/.*")]
    paths = executor.map(train_one, jobs, progress=False, shared={"ds": ds, "cache": cache})
    assert [p.name for p in paths if p.name in done] == sorted(
        done, key=[p.name for p in paths].index
    )
    assert len({p.name for p in paths}) == 4


def test_workers_auto_takes_the_measured_fastest_count_and_caches_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PRIVQUANT_MACHINE_CACHE", str(tmp_path / "machine.json"))
    monkeypatch.setattr(wk, "CHOICES", {})
    monkeypatch.setattr(wk, "available_cores", lambda: 4)
    calls = []

    def fake(model, x, y, candidate, workers, cores):  # noqa: ANN001, ANN202
        calls.append(workers)
        return {1: 100.0, 2: 180.0, 4: 150.0}[workers]

    monkeypatch.setattr(wk, "measure", fake)
    monkeypatch.setattr(wk, "cpu_share", lambda clock, threads: 1.0)  # fake takes no time
    from privquant.models import build_model

    model, x, y = build_model("mlp", (8,), 3), torch.rand(16, 8), torch.arange(16) % 3
    cfg = TrainConfig(precision="fp32", channels_last=False)
    choice = wk.choose_workers(cfg, model, x, y)
    assert (choice.workers, choice.threads, choice.source) == (2, 2, "measured")
    assert sorted(calls) == [1, 2, 4]
    wk.CHOICES.clear()
    again = wk.choose_workers(cfg, model, x, y)
    assert (again.workers, again.source) == (2, "cached") and len(calls) == 3
    stored = json.loads((tmp_path / "machine.json").read_text())
    assert any(v.get("workers") == 2 for v in stored.values())
    # Timed while another job had the cores: cached marked, and the next process times again.
    (tmp_path / "machine.json").unlink()
    wk.CHOICES.clear()
    monkeypatch.setattr(wk, "cpu_share", lambda clock, threads: 0.4)
    assert wk.choose_workers(cfg, model, x, y).source == "measured" and len(calls) == 6
    wk.CHOICES.clear()
    monkeypatch.setattr(wk, "cpu_share", lambda clock, threads: 0.9)
    assert wk.choose_workers(cfg, model, x, y).source == "measured" and len(calls) == 9
    wk.CHOICES.clear()
    assert wk.choose_workers(cfg, model, x, y).source == "cached" and len(calls) == 9


def test_worker_counts_are_validated() -> None:
    with pytest.raises(ValueError, match="workers must be at least 1"):
        ExecutorConfig(workers=0)
    with pytest.raises(ConfigError, match="executor.workers"):
        load_config({**SMALL, "executor": {"workers": "many"}})
    assert ExecutorConfig(workers=1).build().__class__.__name__ == "LocalExecutor"
