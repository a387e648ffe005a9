"""Finished models carried to a fresh machine's cache are used, not retrained (issue 25)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from privquant.pipeline import load_config, run_audit
from privquant.results import AuditResults
from privquant.results.merge import measured

ROOT = Path(__file__).resolve().parents[1]
CONFIG = {
    "name": "carry",
    "data": {"name": "digits", "pool_size": 300, "reference_size": 0, "population_size": 100, "test_size": 200},
    "model": {"name": "mlp", "options": {"hidden": [32]}},
    "train": {"epochs": 4, "batch_size": 32, "optimizer": "adam", "lr": 0.003, "precision": "fp32"},
    "population": {"n_models": 3},
    "variants": [{"name": "fp32"}, {"name": "ls", "steps": [{"method": "label_smoothing", "smoothing": 0.3}]}],
    "attacks": ["loss"],
    "bootstrap": 5,
}  # fmt: skip


def _carry(*args: str) -> dict:
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "carry_cache.py"), *args],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(done.stdout)


def test_carried_models_are_found_by_a_fresh_cache(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    first = {**CONFIG, "cache_dir": str(tmp_path / "cache1")}
    run_audit(load_config(first), tmp_path / "run1", progress=False)
    packed = _carry(
        "pack", str(tmp_path / "cache1"), str(tmp_path / "carry.tar.gz"), "--defense", "none"
    )
    assert packed["entries"] == {"none": 3}  # the plain population only, not the label-smoothed one
    assert _carry("unpack", str(tmp_path / "carry.tar.gz"), str(tmp_path / "cache2"))["added"] == 3
    assert (
        _carry("unpack", str(tmp_path / "carry.tar.gz"), str(tmp_path / "cache2"))["already_there"]
        == 3
    )

    import privquant.population.jobs as jobs

    trained: list[object] = []
    real = jobs.train_model
    monkeypatch.setattr(
        jobs, "train_model", lambda step, ctx: trained.append(step) or real(step, ctx)
    )
    run_audit(
        load_config({**CONFIG, "cache_dir": str(tmp_path / "cache2")}),
        tmp_path / "run2",
        progress=False,
    )
    assert len(trained) == 3 and all(s is not None for s in trained)  # only the ls models trained
    a, b = (AuditResults.load(tmp_path / r) for r in ("run1", "run2"))
    for name in a.variants:
        assert measured(a.variants[name].model_dump(mode="json")) == measured(
            b.variants[name].model_dump(mode="json")
        )


def test_carried_teachers_are_not_retrained(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    # A session can end between a model's sub-teachers; --teachers carries the finished ones.
    config = {**CONFIG, "variants": [{"name": "fp32"},
                                     {"name": "sd", "steps": [{"method": "split_distill", "teachers": 2}]}]}  # fmt: skip
    run_audit(
        load_config({**config, "cache_dir": str(tmp_path / "c1")}), tmp_path / "r1", progress=False
    )
    packed = _carry(
        "pack", str(tmp_path / "c1"), str(tmp_path / "t.tar.gz"), "--defense", "none", "--teachers"
    )
    assert packed["entries"] == {"none": 3, "split_distill teachers": 6}  # 3 models x 2 teachers
    _carry("unpack", str(tmp_path / "t.tar.gz"), str(tmp_path / "c2"))

    from privquant.defenses.base import DefenseContext

    sizes: list[int] = []
    real = DefenseContext.train_fresh
    monkeypatch.setattr(DefenseContext, "train_fresh",
                        lambda self, *a, **k: sizes.append(len(a[0]) if a else len(self.x)) or real(self, *a, **k))  # fmt: skip
    run_audit(
        load_config({**config, "cache_dir": str(tmp_path / "c2")}), tmp_path / "r2", progress=False
    )
    assert len(sizes) == 3, sizes  # the 3 students, no teacher
    a, b = (AuditResults.load(tmp_path / r) for r in ("r1", "r2"))
    assert measured(a.variants["sd"].model_dump(mode="json")) == measured(
        b.variants["sd"].model_dump(mode="json")
    )


def test_a_parts_carried_signals_are_read_not_requeried(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    # The next part runs on another CPU: FP32's signals travel with its models, so FP32 in both parts
    # is the same to the last digit (what privquant merge asks) without querying the models again.
    run_audit(
        load_config({**CONFIG, "cache_dir": str(tmp_path / "c1")}), tmp_path / "r1", progress=False
    )
    packed = _carry("pack", str(tmp_path / "c1"), str(tmp_path / "p.tar.gz"), "--defense", "none",
                    "--run", str(tmp_path / "r1"))  # fmt: skip
    assert packed["run_files"] == ["signals/fp32.npz", "signals/fp32.json", "attacks/fp32.json"]
    unpacked = _carry(
        "unpack", str(tmp_path / "p.tar.gz"), str(tmp_path / "c2"), "--run", str(tmp_path / "r2")
    )
    assert unpacked["added"] == 3 and len(unpacked["run_files"]) == 3

    import privquant.pipeline.run as run

    queried: list[int] = []
    real = run.query_one
    monkeypatch.setattr(
        run,
        "query_one",
        lambda job, *a, **k: queried.append(job.deploy.index) or real(job, *a, **k),
    )
    part2 = {**CONFIG, "cache_dir": str(tmp_path / "c2"),
             "variants": [{"name": "fp32"}, {"name": "ls2", "steps": [{"method": "label_smoothing", "smoothing": 0.1}]}]}  # fmt: skip
    run_audit(load_config(part2), tmp_path / "r2", progress=False)
    assert sorted(queried) == [0, 1, 2]  # the new variant's models only
    a, b = (AuditResults.load(tmp_path / r) for r in ("r1", "r2"))
    assert measured(a.variants["fp32"].model_dump(mode="json")) == measured(
        b.variants["fp32"].model_dump(mode="json")
    )
    missing = subprocess.run([sys.executable, str(ROOT / "scripts" / "carry_cache.py"), "pack", str(tmp_path / "c1"),
                              str(tmp_path / "q.tar.gz"), "--run", str(tmp_path / "r1"), "--variants", "nope"],
                             capture_output=True, text=True)  # fmt: skip
    assert (
        missing.returncode != 0
        and "variant nope" in missing.stderr
        and not (tmp_path / "q.tar.gz").exists()
    )
