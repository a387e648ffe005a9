"""The ``privquant`` program's entry: decide how to start before importing anything heavy.

A heavy command starts again with glibc's malloc tuned (:mod:`privquant.malloc`), and glibc reads
its tunables only when a process starts: that decision comes first, here, with nothing but the
standard library loaded. Importing the commands (torch, scipy, the whole package) took 4-6 s on a
2-core host, and the program used to pay it twice per heavy command, once before the new start.
"""

from __future__ import annotations

import os
import sys

import privquant
from privquant.errors import PrivquantError
from privquant.malloc import tuned_malloc_environ

# The commands that train or query models: they run with the tuned allocator. The others read and
# write results and are not worth a second interpreter start.
HEAVY = {"train", "signals", "quantize", "defend", "eval", "run", "demo", "plan", "tune"}


def reexec_with_tuned_malloc(args: list[str]) -> None:
    """Start ``privquant <args>`` again with glibc's malloc tuned, when it is a heavy command.

    exec replaces this process (same pid, arguments and working directory); a process that
    already runs with malloc tunables (the new start, or the user's own) goes on as it is."""
    command = next((a for a in args if not a.startswith("-")), None)
    if command not in HEAVY or not sys.executable:  # an embedded interpreter cannot be re-run
        return
    try:
        env = tuned_malloc_environ(os.environ)
    except PrivquantError as e:
        print(f"privquant: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    if env is not None:
        sys.stdout.flush()
        os.execve(sys.executable, [sys.executable, "-m", "privquant", *args], env)


def main() -> int:
    """``privquant`` / ``python -m privquant``: the command line of this process."""
    args = sys.argv[1:]
    if args == ["--version"]:  # answered without loading torch
        print(f"privquant {privquant.__version__}")
        return 0
    reexec_with_tuned_malloc(args)
    from privquant.cli import main as run_command

    return run_command(args)
