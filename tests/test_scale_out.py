"""Scale-out on Ray: the same numbers as a local run, and no loss or duplication under faults.

Each test uses a local Ray instance with 2 CPUs started by the module fixture.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray")

from conftest import EXECUTOR_TRAIN, result_numbers  # noqa: E402
from privquant.artifacts import ArtifactCache  # noqa: E402
from privquant.data import load_dataset  # noqa: E402
from privquant.membership import make_split  # noqa: E402
from privquant.pipeline import load_config, run_audit  # noqa: E402
from privquant.population import population_jobs, train_one  # noqa: E402
from privquant.population.ray_executor import RayExecutor  # noqa: E402
from privquant.training import TrainConfig  # noqa: E402

SMALL = {
    "name": "scale-out",
    "data": {"name": "digits", "pool_size": 400, "reference_size": 100},
    "model": {"name": "mlp", "options": {"hidden": [64]}},
    "train": EXECUTOR_TRAIN,
    "population": {"n_models": 4, "queries": 1},
    "variants": [
        {"name": "fp32", "method": "none"},
        {"name": "ptq4", "method": "ptq", "quant": {"weight_bits": 4, "first_last_bits": None}},
        {
            "name": "hamp",
            "steps": [{"method": "hamp"}, {"method": "hamp_output", "random_inputs": 50}],
        },
    ],
    "attacks": ["loss", "rmia"],
    "targets": [0, 1],
    "bootstrap": 20,
}


@pytest.fixture(scope="module", autouse=True)
def local_ray():  # noqa: ANN201
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    # Test functions defined here travel by value (workers cannot import the tests folder).
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.shutdown()


def test_ray_and_local_executors_give_the_same_results(tmp_path: Path) -> None:
    # One CPU per task: both runs train and query with one torch thread.
    local = {**SMALL, "executor": {"kind": "local"}}
    remote = {**SMALL, "executor": {"kind": "ray", "num_cpus": 1}}
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_audit(load_config(local), tmp_path / "local", progress=False)
    finally:
        torch.set_num_threads(threads)
    run_audit(load_config(remote), tmp_path / "ray", progress=False)
    assert result_numbers(tmp_path / "ray") == result_numbers(tmp_path / "local")
    # The run's cache holds exactly one entry per model and deployed model, nothing half-built.
    entries = [p for p in (tmp_path / "ray" / "cache").glob("*/*") if not p.name.startswith(".")]
    assert len(entries) == 4 + 4 + 4  # plain, hamp-trained and ptq4-deployed models
    assert not list((tmp_path / "ray" / "cache").glob("*/.*"))

    # A rerun (e.g. after the driver was interrupted) reuses every artifact: none is rebuilt.
    markers = {p: p.stat().st_mtime_ns for p in (tmp_path / "ray" / "cache").glob("*/*/COMPLETE")}
    run_audit(load_config(remote), tmp_path / "ray", progress=False)
    assert {p: p.stat().st_mtime_ns for p in markers} == markers


def _flaky_train(job, ds, cache, flag_dir):  # noqa: ANN001, ANN202
    """Kills its own worker process the first time model 1 is trained."""
    flag = Path(flag_dir) / f"died-{job.index}"
    if job.index == 1 and not flag.exists():
        flag.write_text("x")
        os._exit(1)  # the worker dies mid-task, as on a node failure
    return train_one(job, ds, cache)


def test_a_task_whose_worker_dies_is_retried_and_nothing_is_lost_or_duplicated(
    tmp_path: Path,
) -> None:
    ds = load_dataset("digits")
    split = make_split(len(ds.y_train), len(ds.y_test), 300, 3, 50, seed=0)
    jobs = population_jobs(split, "mlp", TrainConfig(epochs=3, batch_size=32, optimizer="adam", lr=0.003),
                           {"hidden": [32]})  # fmt: skip
    cache = ArtifactCache(tmp_path / "cache")
    executor = RayExecutor(num_cpus=1, max_retries=2)
    paths = executor.map(_flaky_train, jobs, progress=False,
                         shared={"ds": ds, "cache": cache, "flag_dir": str(tmp_path)})  # fmt: skip
    assert (tmp_path / "died-1").exists()  # the fault happened
    assert len(set(paths)) == 3 and all(cache.get(p.name) == p for p in paths)
    assert not list((tmp_path / "cache").glob("*/.*"))  # no temp folder left behind
    # The retried model is the model a clean run trains with the worker's one thread (on hosts
    # without AVX-512, e.g. AMD Zen 2, the thread count changes float reduction order).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = [train_one(j, ds, ArtifactCache(tmp_path / "clean")) for j in jobs]
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(paths, local, strict=True):
        assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()


def test_shared_inputs_are_put_in_the_object_store_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    puts = []
    real_put = ray.put
    monkeypatch.setattr(
        ray, "put", lambda v, **kw: (puts.append(type(v).__name__), real_put(v, **kw))[1]
    )
    big = np.zeros((2000, 64), dtype=np.float32)
    executor = RayExecutor(num_cpus=1)
    out = executor.map(_row_sum, list(range(6)), progress=False, shared={"data": big})
    assert out == [0.0] * 6 and puts == ["ndarray"]
    # A later stage (e.g. querying after training) reuses the stored copy.
    assert executor.map(_row_sum, [1, 2], progress=False, shared={"data": big}) == [0.0, 0.0]
    assert puts == ["ndarray"]


def _row_sum(i, data):  # noqa: ANN001, ANN202
    return float(data[i].sum())
