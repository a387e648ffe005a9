"""Fault injection: runs killed at random points resume to the same results, and two runs
sharing one cache neither corrupt nor delete each other's artifacts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import result_numbers
from privquant.artifacts import ArtifactCache

SMALL = {
    "name": "faults",
    "data": {"name": "digits", "pool_size": 400, "reference_size": 100},
    "model": {"name": "mlp", "options": {"hidden": [128]}},
    "train": {"epochs": 12, "batch_size": 32, "optimizer": "adam", "lr": 0.003},
    "population": {"n_models": 4, "queries": 1},
    "variants": [
        {"name": "fp32", "method": "none"},
        {"name": "ptq4", "method": "ptq", "quant": {"weight_bits": 4, "first_last_bits": None}},
        {"name": "ls", "method": "label_smoothing", "smoothing": 0.2},
    ],
    "attacks": ["loss", "rmia"],
    "targets": [0, 1],
    "bootstrap": 20,
}


def _start(config: dict, out: Path, tmp: Path) -> subprocess.Popen:
    path = tmp / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same numerics in every process
    return subprocess.Popen([sys.executable, "-m", "privquant.cli", "run", str(path), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)  # fmt: skip


def _assert_cache_whole(root: Path) -> None:
    cache = ArtifactCache(root)
    entries = [p for p in root.glob("*/*") if not p.name.startswith(".")]
    assert entries and all(cache.get(p.name) == p for p in entries)  # every entry verifies
    assert not list(root.glob("*/.*"))  # no temp folder left behind


def _wait_for_work(proc: subprocess.Popen, run: Path) -> float:
    """Wait until the run opens its cache (its imports and checks take seconds before that)."""
    while not (run / "cache").is_dir() and proc.poll() is None:
        time.sleep(0.05)
    return time.perf_counter()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("reference")
    proc = _start(SMALL, tmp / "run", tmp)
    began = _wait_for_work(proc, tmp / "run")
    assert proc.wait(600) == 0, proc.stderr.read().decode()[-2000:]
    # How long the work takes from an empty cache: the window the kills below are drawn from.
    return {"numbers": result_numbers(tmp / "run"), "work_seconds": time.perf_counter() - began}


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_run_killed_at_a_random_point_resumes_to_the_same_results(seed: int, reference: dict,
                                                                     tmp_path: Path) -> None:  # fmt: skip
    rng = np.random.default_rng(seed)
    run = tmp_path / "run"
    for _ in range(2):  # killed twice, at random moments of training, querying or attacking
        proc = _start(SMALL, run, tmp_path)
        # Timed from when the run opens its cache (a kill timed from the start landed mostly in
        # the imports), within the work a run from an empty cache does.
        _wait_for_work(proc, run)
        time.sleep(float(rng.uniform(0.0, reference["work_seconds"])))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(60)
    proc = _start(SMALL, run, tmp_path)
    assert proc.wait(600) == 0, proc.stderr.read().decode()[-2000:]
    assert result_numbers(run) == reference["numbers"]
    _assert_cache_whole(run / "cache")
    assert not [p for p in run.rglob(".*.tmp")]  # no half-written file in the run folder


@pytest.mark.slow
def test_two_runs_sharing_one_cache_finish_with_whole_artifacts(
    reference: dict, tmp_path: Path
) -> None:
    shared = {**SMALL, "cache_dir": str(tmp_path / "shared-cache")}
    procs = [_start(shared, tmp_path / f"run{i}", tmp_path) for i in range(2)]
    for p in procs:
        assert p.wait(600) == 0, p.stderr.read().decode()[-2000:]
    numbers = reference["numbers"]
    assert result_numbers(tmp_path / "run0") == numbers == result_numbers(tmp_path / "run1")
    _assert_cache_whole(tmp_path / "shared-cache")
    # One entry per artifact: 4 plain + 4 label-smoothing models + 4 deployed ptq4 models.
    assert len([p for p in (tmp_path / "shared-cache").glob("*/*")]) == 12
