"""A content-addressed cache of trained artifacts: same inputs, same key, no retraining."""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

import privquant
from privquant.artifacts.atomic import as_if_created, process_alive

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


def _is_docstring(stmt: ast.stmt | None) -> bool:
    return (
        isinstance(stmt, ast.Expr)
        and isinstance(stmt.value, ast.Constant)
        and isinstance(stmt.value.value, str)
    )


def _without_docstrings(tree: ast.AST) -> ast.AST:
    scopes = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    for node in ast.walk(tree):
        if isinstance(node, scopes) and node.body and _is_docstring(node.body[0]):
            node.body = node.body[1:] or [ast.Pass()]
    return tree


def source_digest(source: str | bytes) -> str:
    """sha256 of what Python code does, not how it reads: comments, docstrings, blank lines and
    formatting do not change it (so editing a comment retrains nothing); any statement does."""
    try:
        tree = ast.parse(source)
    except SyntaxError:  # not Python we can parse: fall back to the bytes
        raw = source.encode() if isinstance(source, str) else source
        return hashlib.sha256(raw).hexdigest()
    # The dump omits line and column numbers; the Python minor version is part of the key
    # because the AST's shape can change between versions.
    text = f"{sys.version_info[:2]}" + ast.dump(_without_docstrings(tree))
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
        todo.extend(_source_facts(f, root)[1])
    return sorted(files)


def _source_facts(f: Path, root: Path) -> tuple[str, frozenset[str]]:
    """A source file's digest and the privquant modules it imports. Parsed once per process and
    content: the model, signals and attack code versions share most files (each took 0.7 s on a
    2-core host when it parsed them all again); the bytes are read each time, so an edit counts."""
    source = f.read_bytes()
    return _parsed_facts(source, root)


@cache
def _parsed_facts(source: bytes, root: Path) -> tuple[str, frozenset[str]]:
    return source_digest(source), frozenset(_privquant_imports(ast.parse(source), root))


@cache
def code_version(
    roots: tuple[str, ...] = MODEL_CODE_ROOTS, package_root: Path | None = None
) -> str:
    """Package version plus a hash of the code (not the comments) that determines a model (or
    a result)."""
    root = package_root or Path(privquant.__file__).parent
    h = hashlib.sha256(privquant.__version__.encode())
    for f in model_code_files(roots, root):
        h.update(str(f.relative_to(root)).encode())
        h.update(_source_facts(f, root)[0].encode())
    return f"{privquant.__version__}+{h.hexdigest()[:12]}"


def _temp_prefix(key: str) -> str:
    # The host is part of the name: on a shared filesystem a pid means nothing elsewhere.
    return f".{key[:16]}.{socket.gethostname()}."


def _manifest(folder: Path) -> dict[str, list[Any]]:
    """Size and sha256 of every file of an entry (the marker itself excluded)."""
    out: dict[str, list[Any]] = {}
    for f in sorted(folder.rglob("*")):
        if f.is_file() and f.name != ArtifactCache.MARKER:
            h = hashlib.sha256()
            with open(f, "rb") as fh:
                for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                    h.update(block)
            out[str(f.relative_to(folder))] = [f.stat().st_size, h.hexdigest()]
    return out


def _fsync_tree(folder: Path) -> None:
    """Flush every file of a finished entry to disk before it is published."""
    for f in folder.rglob("*"):
        if f.is_file():
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


class ArtifactCache:
    """Folders keyed by content hash under ``root``; an entry appears whole or not at all."""

    MARKER = "COMPLETE"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._verified: set[Path] = set()

    def key(self, **parts: Any) -> str:
        return content_hash({"code": code_version(), **parts})

    def path(self, key: str) -> Path:
        return self.root / key[:2] / key

    def get(self, key: str) -> Path | None:
        """The complete, undamaged entry for ``key``, or None.

        Every file is checked against the size and sha256 recorded when the entry was built
        (once per process); a damaged entry is moved aside and deleted, so it is rebuilt.
        """
        p = self.path(key)
        marker = p / self.MARKER
        if not marker.is_file():
            return None
        if p in self._verified:
            return p
        try:
            recorded = json.loads(marker.read_text())
            files = recorded["files"]
            damaged = recorded.get("key") != key or _manifest(p) != files
        except (OSError, ValueError, KeyError, TypeError):
            damaged = True
        if damaged:
            self._discard(p, key)
            return None
        self._verified.add(p)
        return p

    def _discard(self, entry: Path, key: str) -> None:
        aside = Path(
            tempfile.mkdtemp(prefix=f"{_temp_prefix(key)}{os.getpid()}.", dir=entry.parent)
        )
        with contextlib.suppress(OSError):  # another process discarded it first
            os.replace(entry, aside / "damaged")
        shutil.rmtree(aside, ignore_errors=True)

    def get_or_create(self, key: str, build: Callable[[Path], None]) -> Path:
        """Return the entry for ``key``, calling ``build(tmp_dir)`` to create it when missing.

        Safe for concurrent runs sharing the cache (processes or cluster workers): each builds
        in its own temp folder and publishes it with one atomic rename; a finished entry is
        never deleted or replaced, so a reader never sees it change. Temp folders of builders
        that died (a killed run or worker) are removed.
        """
        hit = self.get(key)
        if hit is not None:
            return hit
        final = self.path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        self._remove_stale_temps(final.parent, key)
        tmp = Path(tempfile.mkdtemp(prefix=f"{_temp_prefix(key)}{os.getpid()}.", dir=final.parent))
        as_if_created(tmp)  # a shared cache: its entries readable as the umask allows
        try:
            build(tmp)
            marker = {"key": key, "files": _manifest(tmp)}
            (tmp / self.MARKER).write_text(json.dumps(marker, indent=1, sort_keys=True) + "\n")
            _fsync_tree(tmp)
            self._publish(tmp, final, key)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return final

    def _publish(self, tmp: Path, final: Path, key: str) -> None:
        try:
            os.rename(tmp, final)  # fails if final exists (a directory that is not empty)
            return
        except OSError:
            if self.get(key) is not None:  # another run finished the same entry first: keep it
                return
        # An incomplete leftover (no marker) from an interrupted run: move it aside atomically,
        # then publish. Nobody reads an entry without its marker, so this deletes nothing in use.
        aside = Path(
            tempfile.mkdtemp(prefix=f"{_temp_prefix(key)}{os.getpid()}.", dir=final.parent)
        )
        with contextlib.suppress(OSError):  # someone else moved it already
            os.replace(final, aside / "old")
        shutil.rmtree(aside, ignore_errors=True)
        try:
            os.rename(tmp, final)
        except OSError:
            if self.get(key) is None:
                raise

    @staticmethod
    def _remove_stale_temps(folder: Path, key: str) -> None:
        """Delete temp folders of this key whose builder process (on this host) is gone."""
        prefix = _temp_prefix(key)
        for p in folder.glob(prefix + "*"):
            pid = p.name[len(prefix) :].split(".", 1)[0]
            if pid.isdigit() and not process_alive(int(pid)):
                shutil.rmtree(p, ignore_errors=True)
