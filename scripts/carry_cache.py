"""Carry finished models of a long study from one session (machine) to the next.

A study longer than a session resumes from its cache, but each session starts on a fresh machine.
``pack`` writes the complete trained-model entries of a cache (optionally only some defenses) to a
tar.gz small enough to commit; ``unpack`` adds them to a cache, safely extracted, each entry checked
against its own manifest (size and sha256 per file) by the cache on first use. The entries are keyed
by the code that trained them: resume from a worktree pinned to the same commit, or nothing matches.

  python scripts/carry_cache.py pack runs/cache_regime_12500 carry.tar.gz --defense none split_distill --teachers
  python scripts/carry_cache.py unpack carry.tar.gz runs/cache_regime_12500
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

from privquant.artifacts import ArtifactCache
from privquant.data.archive import safe_extract


def _entries(cache: Path) -> list[tuple[Path, dict]]:
    """Complete model entries (checkpoint + meta) of a cache, with their meta."""
    out = []
    for marker in sorted(cache.glob(f"*/*/{ArtifactCache.MARKER}")):
        entry = marker.parent
        meta_file = entry / "meta.json"
        if (entry / "model.safetensors").is_file() and meta_file.is_file():
            out.append((entry, json.loads(meta_file.read_text())))
    return out


def _teacher_entries(cache: Path) -> list[Path]:
    """Complete entries of split_distill's sub-teacher logits: a model whose defense was cut
    off between its teachers resumes from the teachers that finished."""
    return [m.parent for m in sorted(cache.glob(f"*/*/{ArtifactCache.MARKER}"))
            if (m.parent / "logits.npz").is_file() and not (m.parent / "model.safetensors").exists()]  # fmt: skip


def pack(cache: Path, archive: Path, defenses: list[str] | None, teachers: bool = False) -> int:
    chosen = []
    for entry, meta in _entries(cache):
        method = (meta.get("defense") or {}).get("method", "none")
        if defenses is None or method in defenses:
            chosen.append((entry, method))
    if teachers:
        chosen += [(entry, "split_distill teachers") for entry in _teacher_entries(cache)]
    if not chosen:
        raise SystemExit(f"carry_cache: no complete entries in {cache} match {defenses}")
    archive.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".carry.", suffix=".tar.gz", dir=archive.parent)
    os.close(fd)
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            for entry, _ in chosen:
                tar.add(entry, arcname=str(entry.relative_to(cache)))
        os.replace(tmp, archive)  # a half-written archive never carries the final name
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    counts: dict[str, int] = {}
    for _, method in chosen:
        counts[method] = counts.get(method, 0) + 1
    print(json.dumps({"archive": str(archive), "entries": counts, "bytes": archive.stat().st_size}))
    return 0


def unpack(archive: Path, cache: Path) -> int:
    cache.mkdir(parents=True, exist_ok=True)
    added = kept = 0
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        root = safe_extract(archive, Path(tmp) / "entries")  # no links, nothing outside
        for marker in sorted(root.glob(f"*/*/{ArtifactCache.MARKER}")):
            entry = marker.parent
            final = cache / entry.relative_to(root)
            if final.exists():
                kept += 1
                continue
            final.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(entry), final)
            added += 1
    print(json.dumps({"cache": str(cache), "added": added, "already_there": kept}))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("pack", help="complete model entries of CACHE -> ARCHIVE (tar.gz)")
    a.add_argument("cache", type=Path)
    a.add_argument("archive", type=Path)
    a.add_argument("--defense", nargs="+", default=None,
                   help="only models of these train-stage methods ('none': plain training)")  # fmt: skip
    a.add_argument("--teachers", action="store_true",
                   help="also split_distill's finished sub-teachers (their logits)")  # fmt: skip
    b = sub.add_parser("unpack", help="ARCHIVE -> CACHE (entries already there are kept)")
    b.add_argument("archive", type=Path)
    b.add_argument("cache", type=Path)
    args = p.parse_args(argv)
    if args.command == "pack":
        return pack(args.cache, args.archive, args.defense, args.teachers)
    return unpack(args.archive, args.cache)


if __name__ == "__main__":
    sys.exit(main())
