"""Where privquant looks for dataset files and where it caches decoded arrays."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Root of privquant's cache (``$PRIVQUANT_CACHE`` or ``~/.cache/privquant``)."""
    env = os.environ.get("PRIVQUANT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "privquant"


def data_roots() -> list[Path]:
    """Folders searched for dataset files, in order.

    ``$PRIVQUANT_DATA`` (``os.pathsep``-separated) first, then the download cache, then ``./data``
    and ``../shared/datasets`` relative to the working directory.
    """
    roots: list[Path] = []
    env = os.environ.get("PRIVQUANT_DATA")
    if env:
        roots += [Path(p) for p in env.split(os.pathsep) if p]
    roots += [cache_dir() / "raw", Path("data"), Path("..") / "shared" / "datasets"]
    return roots


def find_first(candidates: list[str], roots: list[Path] | None = None) -> Path | None:
    """First existing ``root / candidate`` over all roots (roots outer loop)."""
    for root in roots if roots is not None else data_roots():
        for cand in candidates:
            p = root / cand
            if p.exists():
                return p
    return None
