"""glibc's malloc, tuned for training: what the heavy commands start with, and the record of it.

Torch-free on purpose: the command decides whether to start again with the tuned allocator before
it imports anything heavy (:mod:`privquant.launch`).
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping

from privquant.errors import ConfigError

# glibc's malloc hands a freed block over 128 KiB (its threshold adapts up to 32 MiB) back to the
# kernel, so a training step that allocates and frees the same activations and per-example
# gradients each step takes fresh zeroed pages every time: on a 2-core host DP-SGD ran 1.3x and
# querying 1.7x slower for it (docs/results/malloc_tuning.md). Keeping freed blocks in the heap removes that; the
# numbers computed are unchanged (the allocator decides where tensors live, not what they hold).
TUNED_MALLOC = (
    "glibc.malloc.mmap_threshold=33554432"  # blocks up to 32 MiB (glibc's maximum) from the heap
    ":glibc.malloc.trim_threshold=4294967296"  # and freed memory is kept for the next step
    ":glibc.malloc.top_pad=268435456"  # grow the heap 256 MiB at a time, not a page
)
MALLOC_SWITCH = "PRIVQUANT_MALLOC"  # "system": leave glibc's defaults


def tuned_malloc_environ(
    environ: Mapping[str, str], libc: tuple[str, str] | None = None
) -> dict[str, str] | None:
    """``environ`` with :data:`TUNED_MALLOC` added, or None where it does not apply.

    None on a C library other than glibc >= 2.26 (no tunables), when ``PRIVQUANT_MALLOC=system``,
    and when ``GLIBC_TUNABLES`` already sets a malloc tunable (the user's choice stands; this
    also ends a re-exec after one round)."""
    name, version = libc if libc is not None else platform.libc_ver()
    if name != "glibc" or tuple(int(p) for p in version.split(".")[:2] if p.isdigit()) < (2, 26):
        return None
    switch = environ.get(MALLOC_SWITCH, "tuned")
    if switch not in ("tuned", "system"):
        raise ConfigError(f"{MALLOC_SWITCH}={switch!r}: expected 'tuned' (default) or 'system'")
    existing = environ.get("GLIBC_TUNABLES", "")
    if switch == "system" or "glibc.malloc." in existing:
        return None
    out = dict(environ)
    out["GLIBC_TUNABLES"] = f"{existing}:{TUNED_MALLOC}" if existing else TUNED_MALLOC
    return out


def malloc_setting(environ: Mapping[str, str] | None = None) -> str:
    """What this process's allocator runs with, for the machine record: the malloc tunables
    set, or "system" (glibc's defaults or another C library)."""
    environ = os.environ if environ is None else environ
    parts = [
        p for p in environ.get("GLIBC_TUNABLES", "").split(":") if p.startswith("glibc.malloc.")
    ]
    return ":".join(parts) if parts else "system"
