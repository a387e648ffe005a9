"""A content-addressed cache of trained artifacts: same inputs, same key, no retraining."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

import privquant

# Code whose change must invalidate cached models (data loading and reporting do not).
TRAINING_CODE = ("models", "training", "quant")


def _canonical(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        digest = hashlib.sha256(np.ascontiguousarray(obj).tobytes()).hexdigest()
        return {"__ndarray__": [str(obj.dtype), list(obj.shape), digest]}
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "model_dump"):  # pydantic configs
        return _canonical(obj.model_dump(mode="json"))
    return obj


def content_hash(obj: Any) -> str:
    """sha256 of a canonical JSON form of ``obj`` (arrays hashed by dtype, shape and bytes)."""
    text = json.dumps(_canonical(obj), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@cache
def code_version(subpackages: tuple[str, ...] = TRAINING_CODE) -> str:
    """Package version plus a hash of the source files that determine a trained model."""
    root = Path(privquant.__file__).parent
    h = hashlib.sha256(privquant.__version__.encode())
    for sub in subpackages:
        for f in sorted((root / sub).rglob("*.py")):
            h.update(str(f.relative_to(root)).encode())
            h.update(f.read_bytes())
    return f"{privquant.__version__}+{h.hexdigest()[:12]}"


class ArtifactCache:
    """Folders keyed by content hash under ``root``; an entry appears whole or not at all."""

    MARKER = "COMPLETE"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def key(self, **parts: Any) -> str:
        return content_hash({"code": code_version(), **parts})

    def path(self, key: str) -> Path:
        return self.root / key[:2] / key

    def get(self, key: str) -> Path | None:
        p = self.path(key)
        return p if (p / self.MARKER).is_file() else None

    def get_or_create(self, key: str, build: Callable[[Path], None]) -> Path:
        """Return the entry for ``key``, calling ``build(tmp_dir)`` to create it when missing."""
        hit = self.get(key)
        if hit is not None:
            return hit
        final = self.path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key[:12]}.", dir=final.parent))
        try:
            build(tmp)
            (tmp / self.MARKER).write_text(key + "\n")
            if final.exists():  # an incomplete leftover from an interrupted run
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return final
