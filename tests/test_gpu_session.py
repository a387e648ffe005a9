"""The one-call GPU session (scripts/gpu_session.sh): its config is the GPU study made smaller, and
its prepare/restore pair takes docs/results out of what travels and puts the index back exactly."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_session.sh"

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def test_call_config_is_the_gpu_study_made_smaller() -> None:
    from privquant.pipeline import load_config

    full = load_config(ROOT / "configs" / "gpu_cifar10_resnet18.yaml")
    call = load_config(ROOT / "configs" / "gpu_cifar10_resnet18_call.yaml")
    # What is measured in one call must transfer to the full study: same data, split seed,
    # model, recipe and attacks; fewer models, fewer variants, each model trained alone.
    for part in ("seed", "data", "model", "train", "attacks", "targets", "bootstrap"):
        assert getattr(call, part) == getattr(full, part), part
    assert 8 <= call.population.n_models < full.population.n_models
    assert call.population.queries == full.population.queries
    full_variants = {v.name: v for v in full.variants}
    assert [v.name for v in call.variants] == ["fp32", "qat4"]
    assert all(v == full_variants[v.name] for v in call.variants)
    assert call.executor.stack == 1  # --hours can stop between models and time each


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True,
                          text=True).stdout  # fmt: skip


def _repo(tmp_path: Path) -> tuple[Path, Path]:
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(SCRIPT, repo / "scripts" / "gpu_session.sh")
    (repo / "docs" / "results" / "run").mkdir(parents=True)
    (repo / "docs" / "results" / "run" / "results.json").write_text("{}\n")
    (repo / "docs" / "results" / "run.md").write_text("# run\n")
    (repo / "docs" / "results" / "regime_12500").mkdir()
    (repo / "docs" / "results" / "regime_12500" / "carry_dp.tar.gz").write_bytes(b"dp models")
    (repo / "README.md").write_text("readme\n")
    _git(repo, "init", "-q")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    data = tmp_path / "datasets"
    data.mkdir()
    (data / "cifar10-jpeg.tar.gz").write_bytes(b"not really an archive")
    return repo, data


def _session(repo: Path, data: Path, mode: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PRIVQUANT_DATA": str(data), "GPU_OFFLINE": "1"}
    return subprocess.run(["bash", "scripts/gpu_session.sh", mode], cwd=repo, env=env,
                          capture_output=True, text=True)  # fmt: skip


@needs_git
def test_prepare_slims_what_travels_and_restore_puts_the_index_back(tmp_path: Path) -> None:
    repo, data = _repo(tmp_path)
    head = _git(repo, "rev-parse", "HEAD").strip()

    prepared = _session(repo, data, "prepare")
    assert prepared.returncode == 0, prepared.stderr
    # docs/results no longer travels (not tracked, and ignored), its files are still on disk
    assert _git(repo, "ls-files", "docs/results") == ""
    untracked = _git(repo, "status", "--porcelain", "--untracked-files=all", "docs/results", ".gpu")
    assert "??" not in untracked  # staged as deleted from the index, and not untracked either
    assert (repo / "docs" / "results" / "run" / "results.json").is_file()
    assert (repo / ".gpu" / "data" / "cifar10-jpeg.tar.gz").read_bytes() == b"not really an archive"
    assert (repo / ".gpu" / "commit").read_text().strip() == head
    assert (repo / ".gpu" / "carry_dp.tar.gz").read_bytes() == b"dp models"  # for task dp
    assert "what travels" in prepared.stdout

    restored = _session(repo, data, "restore")
    assert restored.returncode == 0, restored.stderr
    assert _git(repo, "status", "--porcelain") == ""  # index as committed, .gpu/ still ignored
    assert sorted(_git(repo, "ls-files").split()) == [
        "README.md", "docs/results/regime_12500/carry_dp.tar.gz", "docs/results/run.md",
        "docs/results/run/results.json", "scripts/gpu_session.sh",
    ]  # fmt: skip
    exclude = (repo / ".git" / "info" / "exclude").read_text().splitlines()
    assert "/.gpu/" in exclude and "/docs/results/" not in exclude


@needs_git
def test_prepare_refuses_an_index_it_could_not_restore(tmp_path: Path) -> None:
    repo, data = _repo(tmp_path)
    (repo / "README.md").write_text("changed\n")
    _git(repo, "add", "README.md")
    refused = _session(repo, data, "prepare")
    assert refused.returncode == 2
    assert "staged changes" in refused.stderr
    assert "docs/results/run.md" in _git(repo, "ls-files")
    assert not (repo / ".gpu").exists()
