"""The artifact cache never serves a damaged entry and is safe for runs sharing it."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from pathlib import Path

import numpy as np

from privquant.artifacts import ArtifactCache
from privquant.artifacts.cache import _temp_prefix


def _build(d: Path) -> None:
    (d / "weights.bin").write_bytes(np.arange(1000, dtype=np.int64).tobytes())
    (d / "meta.json").write_text(json.dumps({"ok": True}))


def test_a_damaged_entry_is_detected_and_rebuilt(tmp_path: Path) -> None:
    key = "ab" * 32
    for damage in ("same_size", "truncate", "delete", "marker"):
        cache = ArtifactCache(tmp_path / damage)
        entry = cache.get_or_create(key, _build)
        good = (entry / "weights.bin").read_bytes()
        target = entry / "weights.bin"
        if damage == "same_size":  # silent corruption: one byte flipped, size unchanged
            data = bytearray(good)
            data[100] ^= 0xFF
            target.write_bytes(bytes(data))
        elif damage == "truncate":
            target.write_bytes(good[:10])
        elif damage == "delete":
            target.unlink()
        else:
            (entry / ArtifactCache.MARKER).write_text("not json")
        fresh = ArtifactCache(tmp_path / damage)  # a new process: nothing verified yet
        assert fresh.get(key) is None, damage
        calls = []
        rebuilt = fresh.get_or_create(key, lambda d, calls=calls: (calls.append(1), _build(d)))
        assert calls == [1] and (rebuilt / "weights.bin").read_bytes() == good
        assert ArtifactCache(tmp_path / damage).get(key) == rebuilt
        assert not [p for p in rebuilt.parent.iterdir() if p.name.startswith(".")]


def _race(root: str, key: str, barrier, out) -> None:  # noqa: ANN001
    cache = ArtifactCache(root)
    barrier.wait()

    def slow_build(d: Path) -> None:
        _build(d)
        time.sleep(0.2)  # both builders are inside build at the same time

    entry = cache.get_or_create(key, slow_build)
    out.put((entry / "weights.bin").read_bytes() == np.arange(1000, dtype=np.int64).tobytes())


def test_two_processes_building_one_entry_both_get_it_whole(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    for trial in range(3):
        key = f"{trial:02d}" * 32
        barrier, out = ctx.Barrier(2), ctx.Queue()
        procs = [
            ctx.Process(target=_race, args=(str(tmp_path), key, barrier, out)) for _ in range(2)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0, 0]
        assert out.get(timeout=5) and out.get(timeout=5)
        cache = ArtifactCache(tmp_path)
        assert cache.get(key) is not None
        assert not [p for p in cache.path(key).parent.iterdir() if p.name.startswith(".")]


def test_temp_folders_of_dead_builders_are_removed(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)
    key = "cd" * 32
    folder = cache.path(key).parent
    folder.mkdir(parents=True)
    dead = _dead_pid()
    stale = folder / f"{_temp_prefix(key)}{dead}.xyz"
    (stale / "sub").mkdir(parents=True)
    alive = folder / f"{_temp_prefix(key)}{os.getpid()}.abc"  # a live builder: left alone
    alive.mkdir()
    cache.get_or_create(key, _build)
    assert not stale.exists() and alive.exists()


def _dead_pid() -> int:
    ctx = mp.get_context("spawn")
    p = ctx.Process(target=time.sleep, args=(0,))
    p.start()
    p.join()
    return p.pid


def test_published_files_and_entries_have_the_modes_a_plain_write_gives(tmp_path: Path) -> None:
    from privquant.artifacts import atomic_write_json
    from privquant.data.archive import safe_extract

    old = os.umask(0o027)
    try:
        atomic_write_json(tmp_path / "results.json", {"a": 1})  # a run's output: not 0600
        entry = ArtifactCache(tmp_path / "cache").get_or_create("cd" * 32, _build)  # not 0700
        import tarfile

        with tarfile.open(tmp_path / "a.tar", "w") as tf:
            tf.add(tmp_path / "results.json", arcname="r.json")
        extracted = safe_extract(tmp_path / "a.tar", tmp_path / "out")
    finally:
        os.umask(old)
    assert (tmp_path / "results.json").stat().st_mode & 0o777 == 0o640
    assert entry.stat().st_mode & 0o777 == 0o750
    assert extracted.stat().st_mode & 0o777 == 0o750
