"""Atomic file writes: a reader never sees a half-written file, a crash leaves no debris."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    """This process's umask, without changing it (Linux reports it; elsewhere set and restore)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def as_if_created(path: str | os.PathLike[str]) -> None:
    """Give a temp file or folder the mode a plain open() or mkdir() would have given it.

    mkstemp and mkdtemp create owner-only entries (0600, 0700), right for a temp name but wrong
    for what is renamed into place: a report, results.json or a shared cache entry must stay
    readable by whoever could read a file written the ordinary way."""
    full = 0o777 if os.path.isdir(path) else 0o666
    os.chmod(path, full & ~_umask())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The pid in the name lets a later run tell a dead writer's debris from a live write.
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.pid{os.getpid()}.", suffix=".tmp", dir=path.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    as_if_created(tmp_path)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_json(path: str | os.PathLike[str], obj: Any, sort_keys: bool = True) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=sort_keys) + "\n").encode())


def remove_stale_temps(folder: str | os.PathLike[str]) -> int:
    """Delete temp files under ``folder`` left by writers that died (killed runs); return how many."""
    removed = 0
    for p in Path(folder).rglob(".*.tmp"):
        pids = [x[3:] for x in p.name.split(".") if x.startswith("pid") and x[3:].isdigit()]
        pid = int(pids[-1]) if pids else None
        if pid is not None and not process_alive(pid):
            p.unlink(missing_ok=True)
            removed += 1
    return removed


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (a writer whose temp files must be kept)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
