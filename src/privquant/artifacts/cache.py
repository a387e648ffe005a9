"""A content-addressed cache of trained artifacts: same inputs, same key, no retraining."""

from __future__ import annotations

import ast
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

# What a trained or transformed model depends on: these modules and everything they import
# inside privquant (derived from the source, so a new package is covered without an edit).
MODEL_CODE_ROOTS = ("privquant.population", "privquant.defenses")
# Data loaders are not followed: what they produce is hashed into every key (dataset checksum).
NOT_FOLLOWED = ("privquant.data",)


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


def _module_file(root: Path, module: str) -> Path | None:
    parts = module.split(".")[1:]
    if not parts:  # the top-level package: its __init__ only re-exports
        return root / "__init__.py"
    rel = Path(*parts)
    for f in (root / rel / "__init__.py", root / rel.with_suffix(".py")):
        if f.is_file():
            return f
    return None


def _privquant_imports(tree: ast.AST, root: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("privquant"))
        elif (
            isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("privquant")
        ):
            found.add(node.module)
            for a in node.names:  # ``from privquant.x import y`` may name a submodule y
                if _module_file(root, f"{node.module}.{a.name}") is not None:
                    found.add(f"{node.module}.{a.name}")
    return found


def model_code_files(
    roots: tuple[str, ...] = MODEL_CODE_ROOTS, package_root: Path | None = None
) -> list[Path]:
    """Source files of ``roots`` and of every privquant module they import, transitively."""
    root = package_root or Path(privquant.__file__).parent
    todo, seen, files = list(roots), set(), []
    while todo:
        module = todo.pop()
        if module in seen or module.startswith(NOT_FOLLOWED):
            continue
        seen.add(module)
        f = _module_file(root, module)
        if f is None:
            continue
        files.append(f)
        # Parent packages are not followed: their __init__ only re-exports, and following it
        # would pull in reporting and attack code that never touches a model.
        todo.extend(_privquant_imports(ast.parse(f.read_bytes()), root))
    return sorted(files)


@cache
def code_version(
    roots: tuple[str, ...] = MODEL_CODE_ROOTS, package_root: Path | None = None
) -> str:
    """Package version plus a hash of the source files that determine a model (or a result)."""
    root = package_root or Path(privquant.__file__).parent
    h = hashlib.sha256(privquant.__version__.encode())
    for f in model_code_files(roots, root):
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
