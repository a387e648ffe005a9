"""scripts/compare_tracks.py pairs the same training step across two caches, and nothing else."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str = "compare_tracks"):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def _teacher_logits(rng: np.random.Generator, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """A teacher's logits: the true class favoured, plus what each image does to any model (shared)
    and this teacher's own noise (its training run)."""
    logits = images + 0.4 * rng.normal(size=images.shape)
    logits[np.arange(len(labels)), labels] += 2.5  # ~75% accurate, as the teachers
    return logits.astype(np.float32)


def _write_cache(root: Path, entries: dict[str, np.ndarray], reference: np.ndarray) -> Path:
    for name, held_out in entries.items():
        d = root / name[:2] / name
        d.mkdir(parents=True)
        np.savez(d / "logits.npz", held_out=held_out, reference=reference)
        (d / "COMPLETE").touch()
    return root


def test_steps_pair_by_their_rows_even_when_rows_follow_the_class_order(tmp_path: Path) -> None:
    ct = _script()
    rng = np.random.default_rng(0)
    n, classes, steps = 1200, 10, 4
    # Each step holds out different images, each block sorted by class as the dataset's rows are:
    # predicted labels then agree on different images about as often as on the same ones.
    labels = np.sort(rng.integers(0, classes, size=n))
    images = [rng.normal(size=(n, classes)) for _ in range(steps)]
    ref = np.zeros((5, classes), np.float32)
    a = {f"a{k}": _teacher_logits(rng, images[k], labels) for k in range(steps)}
    b = {
        f"b{k}": _teacher_logits(rng, images[k], labels) for k in (2, 0, 3)
    }  # step 1 not trained here
    pairs = ct.pair_teachers(
        ct.teacher_entries(_write_cache(tmp_path / "a", a, ref)),
        ct.teacher_entries(_write_cache(tmp_path / "b", b, ref)),
    )
    names_a, names_b = sorted(a), sorted(b)
    found = {names_a[i]: names_b[j] for i, j, _, _ in pairs}
    assert found == {"a0": "b0", "a2": "b2", "a3": "b3"}
    # The trap the margins avoid: on different images the labels agree far above chance.
    agree_other = (a["a0"].argmax(1) == b["b2"].argmax(1)).mean()
    assert agree_other > 0.5
    for _, _, corr, runner_up in pairs:
        assert corr > 0.5 > runner_up + 0.3


def test_an_ambiguous_pairing_is_refused(tmp_path: Path) -> None:
    ct = _script()
    rng = np.random.default_rng(1)
    labels = np.sort(rng.integers(0, 10, size=800))
    images = rng.normal(size=(800, 10))
    ref = np.zeros((5, 10), np.float32)
    # Two entries of one cache on the same rows: no clear partner for the other cache's entry.
    b = {f"b{k}": _teacher_logits(rng, images, labels) for k in range(2)}
    a = {"a0": _teacher_logits(rng, images, labels)}
    with pytest.raises(SystemExit, match="no clear partner"):
        ct.pair_teachers(
            ct.teacher_entries(_write_cache(tmp_path / "a", a, ref)),
            ct.teacher_entries(_write_cache(tmp_path / "b", b, ref)),
        )


def test_paired_interval_is_a_t_interval() -> None:
    ct = _script()
    got = ct.paired_interval(np.array([0.01, -0.01, 0.02, 0.0]))
    assert got["n"] == 4 and got["mean"] == pytest.approx(0.005)
    # t(0.975, 3) = 3.182; sd = 0.01291
    assert got["high"] - got["mean"] == pytest.approx(3.182 * 0.0129099 / 2, rel=1e-3)


def _write_student(root: Path, name: str, members: int, method: str = "split_distill") -> None:
    d = root / name[:2] / name
    d.mkdir(parents=True)
    (d / "meta.json").write_text(json.dumps({"n_members": members, "defense": {"method": method}}))
    (d / "COMPLETE").touch()


def test_students_are_found_by_member_count_and_a_shared_count_is_refused(tmp_path: Path) -> None:
    ct = _script()
    _write_student(tmp_path, "aa01", 12673)
    _write_student(tmp_path, "bb02", 12480)
    _write_student(tmp_path, "cc03", 12500, method="selena")  # not a split-distillation student
    (tmp_path / "dd" / "dd04").mkdir(parents=True)  # unfinished: no COMPLETE marker
    (tmp_path / "dd" / "dd04" / "meta.json").write_text(
        json.dumps({"n_members": 12000, "defense": {"method": "split_distill"}})
    )
    found = ct.student_dirs(tmp_path)
    assert {k: v.name for k, v in found.items()} == {12673: "aa01", 12480: "bb02"}
    _write_student(tmp_path, "ee05", 12480)
    with pytest.raises(SystemExit, match="two students with 12480 members"):
        ct.student_dirs(tmp_path)


def test_the_probe_uses_the_exact_paired_interval_of_this_checkout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from privquant.metrics.epsilon import paired_accuracy_difference_interval

    # Run as a script its folder is on the path; imported here, it is put there by hand.
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    monkeypatch.delitem(sys.modules, "compare_tracks", raising=False)
    interval = _script("probe_qat_student").checkout_paired_interval()
    rng = np.random.default_rng(2)
    base = rng.random(2000) < 0.76
    deployed = base.copy()
    flip = rng.choice(2000, size=120, replace=False)
    deployed[flip] = ~deployed[flip]
    assert interval(deployed, base) == paired_accuracy_difference_interval(deployed, base)
    low, high = interval(deployed, base)
    assert low < deployed.mean() - base.mean() < high


def test_the_scripts_record_their_own_checkout_not_the_one_on_the_path() -> None:
    # The part-5 scripts run with a pinned worktree's privquant on the path; the lines they write must
    # still say which commit of the scripts produced them.
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    if not head:
        pytest.skip("not a git checkout")
    assert _script().script_commit() == head
