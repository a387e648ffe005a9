"""Carry finished models of a long study from one session (machine) to the next.

A study longer than a session resumes from its cache, but each session starts on a fresh machine.
``pack`` writes the complete trained-model entries of a cache (optionally only some defenses) to a
tar.gz small enough to commit; ``unpack`` adds them to a cache, safely extracted, each entry checked
against its own manifest (size and sha256 per file) by the cache on first use. The entries are keyed
by the code that trained them: resume from a worktree pinned to the same commit, or nothing matches.

  python scripts/carry_cache.py pack runs/cache_regime_12500 carry.tar.gz --defense none split_distill --teachers
  python scripts/carry_cache.py unpack carry.tar.gz runs/cache_regime_12500
  python scripts/carry_cache.py list carry.tar.gz          # what it holds, without extracting it

With ``pack --run RUN [--variants fp32]`` a finished part's signals and attack results of those variants
travel too, and ``unpack --run NEXT_RUN`` puts them in the next part's run folder: the next part reads them
(their keys match) rather than re-querying the carried models on another CPU, where fp32 logits can differ
in the last bits, so the parts still merge exactly. The precision those variants' models were trained in
travels with them as precision pins (the run's own, else what its ``precision: auto`` resolved to, from its
results.json): the next part, on a host where ``auto`` resolves differently, still finds and reads them
(privquant.pipeline.pins).
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

from privquant.artifacts import ArtifactCache, atomic_write_json
from privquant.data.archive import safe_extract
from privquant.defenses import VariantConfig
from privquant.errors import ConfigError
from privquant.pipeline.pins import PINS_FILE, expand_pins, read_pins

# The archive folder of a part's carried signals (cache entries sit under 2-hex-digit folders).
RUN_PREFIX = "run"


def _entries(cache: Path) -> list[tuple[Path, dict]]:
    """Complete model entries (checkpoint + meta) of a cache, with their meta."""
    out = []
    for marker in sorted(cache.glob(f"*/*/{ArtifactCache.MARKER}")):
        entry = marker.parent
        meta_file = entry / "meta.json"
        if (entry / "model.safetensors").is_file() and meta_file.is_file():
            out.append((entry, json.loads(meta_file.read_text())))
    return out


def _method(meta: dict) -> str:
    """The train-stage method a model entry's meta records ('none': plain training)."""
    return (meta.get("defense") or {}).get("method", "none")


def _teacher_entries(cache: Path) -> list[Path]:
    """Complete entries of split_distill's sub-teacher logits: a model whose defense was cut
    off between its teachers resumes from the teachers that finished."""
    return [m.parent for m in sorted(cache.glob(f"*/*/{ArtifactCache.MARKER}"))
            if (m.parent / "logits.npz").is_file() and not (m.parent / "model.safetensors").exists()]  # fmt: skip


def _run_files(run: Path, variants: list[str]) -> list[Path]:
    """A finished part's signals and attack results of ``variants``: the next part, on another
    host, reads them (their keys match) instead of re-querying the carried models, whose fp32
    logits could differ there in the last bits, so a merge of the parts stays exact."""
    files = []
    for v in variants:
        found = [
            run / "signals" / f"{v}.npz",
            run / "signals" / f"{v}.json",
            run / "attacks" / f"{v}.json",
        ]
        missing = [str(f) for f in found if not f.is_file()]
        if missing:
            raise SystemExit(f"carry_cache: --run {run}: variant {v} has no {', '.join(missing)}")
        files += found
    return files


def _run_pins(run: Path, variants: list[str]) -> dict[str, dict]:
    """The precision ``variants``' models were trained in: the run's pins (a variant sharing a
    pinned variant's population included), else what its ``precision: auto`` resolved to, as
    results.json records it (machine.train_precision; in older results, the one decision its
    process made for the model's name). A part that never finished an audit and has no pins
    says nothing: its variants carry no pin."""
    own = read_pins(run)
    results = run / "results.json"
    if not results.is_file():
        return {v: p for v, p in own.items() if v in variants}
    done = json.loads(results.read_text())
    steps = {name: v.get("steps", []) for name, v in done.get("variants", {}).items()}
    own = expand_pins([VariantConfig(name=n, steps=s) for n, s in steps.items()], own)
    pins = {v: p for v, p in own.items() if v in variants}
    machine = done.get("machine", {})
    own_choice = machine.get("train_precision")
    if isinstance(own_choice, dict) and isinstance(own_choice.get("channels_last"), bool):
        choices = [own_choice]  # what the run resolved (recorded since session 33)
    else:  # older results: the process's decisions for the model's name; ambiguous if several
        model = done.get("config", {}).get("model", {}).get("name")
        choices = [c for c in machine.get("precision", []) if c.get("model") == model]
    if len(choices) == 1:
        auto = {
            "precision": choices[0]["precision"],
            "channels_last": bool(choices[0]["channels_last"]),
        }
        for v in variants:
            pins.setdefault(v, auto)
    return pins


def pack(cache: Path, archive: Path, defenses: list[str] | None, teachers: bool = False,
         run: Path | None = None, variants: tuple[str, ...] = ()) -> int:  # fmt: skip
    chosen = []
    for entry, meta in _entries(cache):
        method = _method(meta)
        if defenses is None or method in defenses:
            chosen.append((entry, method))
    if teachers:
        chosen += [(entry, "split_distill teachers") for entry in _teacher_entries(cache)]
    run_files = _run_files(run, list(variants)) if run is not None else []
    pins = _run_pins(run, list(variants)) if run is not None else {}
    if not chosen:
        raise SystemExit(f"carry_cache: no complete entries in {cache} match {defenses}")
    archive.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".carry.", suffix=".tar.gz", dir=archive.parent)
    os.close(fd)
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            for entry, _ in chosen:
                tar.add(entry, arcname=str(entry.relative_to(cache)))
            for f in run_files:
                tar.add(f, arcname=f"{RUN_PREFIX}/{f.relative_to(run)}")
            if pins:
                with tempfile.TemporaryDirectory() as d:
                    atomic_write_json(Path(d) / PINS_FILE, pins)
                    tar.add(Path(d) / PINS_FILE, arcname=f"{RUN_PREFIX}/{PINS_FILE}")
        os.replace(tmp, archive)  # a half-written archive never carries the final name
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    counts: dict[str, int] = {}
    for _, method in chosen:
        counts[method] = counts.get(method, 0) + 1
    out = {"archive": str(archive), "entries": counts, "bytes": archive.stat().st_size}
    if run_files:
        out["run_files"] = [str(f.relative_to(run)) for f in run_files]
    if run is not None:
        out["precision_pins"] = pins
    print(json.dumps(out))
    return 0


def _merge_pins(carried: Path, run: Path) -> dict[str, dict]:
    """The carried pins added to the next part's own (a variant pinned otherwise there: refused)."""
    try:
        mine, theirs = read_pins(run), read_pins(carried)
    except ConfigError as e:
        raise SystemExit(f"carry_cache: {e}") from None
    clash = sorted(v for v in theirs if v in mine and mine[v] != theirs[v])
    if clash:
        raise SystemExit(f"carry_cache: {run / PINS_FILE} pins {', '.join(clash)} otherwise than the carry "
                         f"({', '.join(f'{v}: {theirs[v]}' for v in clash)})")  # fmt: skip
    merged = {**mine, **theirs}
    run.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run / PINS_FILE, merged)
    (carried / PINS_FILE).unlink()
    return merged


def unpack(archive: Path, cache: Path, run: Path | None = None) -> int:
    cache.mkdir(parents=True, exist_ok=True)
    added = kept = 0
    placed: list[str] = []
    pins: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        root = safe_extract(archive, Path(tmp) / "entries")  # no links, nothing outside
        carried = root / RUN_PREFIX
        if carried.is_dir():
            if run is None:
                raise SystemExit(
                    f"carry_cache: {archive} carries a part's signals; say where with --run RUN_DIR"
                )
            if (carried / PINS_FILE).is_file():
                pins = _merge_pins(carried, run)
            for f in sorted(p for p in carried.rglob("*") if p.is_file()):
                final = run / f.relative_to(carried)
                final.parent.mkdir(parents=True, exist_ok=True)
                if not final.exists():  # a file the part already wrote is its own; keep it
                    os.replace(f, final)
                    placed.append(str(f.relative_to(carried)))
            shutil.rmtree(carried)
        for marker in sorted(root.glob(f"*/*/{ArtifactCache.MARKER}")):
            entry = marker.parent
            final = cache / entry.relative_to(root)
            if final.exists():
                kept += 1
                continue
            final.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(entry), final)
            added += 1
    out = {"cache": str(cache), "added": added, "already_there": kept}
    if placed:
        out["run_files"] = placed
    if pins:
        out["precision_pins"] = pins
    print(json.dumps(out))
    return 0


def list_archive(archive: Path) -> int:
    """What an archive carries, read without extracting it: models per train-stage method (with
    their member counts), sub-teachers, and a part's run files."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            files = [m for m in tar.getmembers() if m.isfile()]
            metas = [json.load(tar.extractfile(m)) for m in files  # type: ignore[arg-type]
                     if m.name.count("/") == 2 and m.name.endswith("/meta.json")]  # fmt: skip
    except (OSError, tarfile.TarError, json.JSONDecodeError) as e:
        raise SystemExit(f"carry_cache: cannot read {archive} ({e})") from None
    names = {m.name for m in files}
    models: dict[str, list[int]] = {}
    for meta in metas:
        method = _method(meta)
        models.setdefault(method, []).append(int(meta.get("n_members", 0)))
    teachers = sum(1 for n in names if n.count("/") == 2 and n.endswith("/logits.npz")
                   and n.rsplit("/", 1)[0] + "/model.safetensors" not in names)  # fmt: skip
    out = {"archive": str(archive), "bytes": archive.stat().st_size,
           "models": {m: {"count": len(n), "members": sorted(n)} for m, n in sorted(models.items())},
           "split_distill teachers": teachers,
           "run_files": sum(1 for n in names if n.startswith(f"{RUN_PREFIX}/"))}  # fmt: skip
    print(json.dumps(out))
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
    a.add_argument(
        "--run",
        type=Path,
        default=None,
        help="a finished part's run folder, to carry --variants from",
    )
    a.add_argument("--variants", nargs="+", default=["fp32"],
                   help="with --run: variants whose signals and attack results travel (default fp32)")  # fmt: skip
    b = sub.add_parser("unpack", help="ARCHIVE -> CACHE (entries already there are kept)")
    b.add_argument("archive", type=Path)
    b.add_argument("cache", type=Path)
    b.add_argument(
        "--run", type=Path, default=None, help="the next part's run folder (for carried signals)"
    )
    c = sub.add_parser("list", help="what ARCHIVE carries, without extracting it")
    c.add_argument("archive", type=Path)
    args = p.parse_args(argv)
    if args.command == "list":
        return list_archive(args.archive)
    if args.command == "pack":
        return pack(
            args.cache, args.archive, args.defense, args.teachers, args.run, tuple(args.variants)
        )
    return unpack(args.archive, args.cache, args.run)


if __name__ == "__main__":
    sys.exit(main())
