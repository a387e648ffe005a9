"""How long the ``privquant`` program takes before it does any work.

A heavy command (``run``, ``plan``, ``demo``, ...) starts twice: the second start has glibc's
malloc tuned (:mod:`privquant.launch`). Each case is a fresh process, timed wall-clock from launch
to exit, ``--reps`` times (median reported); ``plan --help`` goes through the restart and the
import of every command, then prints its help.

    python benchmarks/cli_startup.py [--reps 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CASES = {
    "version": ["-m", "privquant", "--version"],
    "heavy_command_help": ["-m", "privquant", "plan", "--help"],
    "import_torch": ["-c", "import torch"],
    "import_commands": ["-c", "import privquant.cli"],
}


def _time(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args()
    seconds: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(args.reps):  # interleaved, so a slow moment of the host hits every case
        for name, case in CASES.items():
            seconds[name].append(_time(case))
    from privquant.machine import machine_info

    print(json.dumps({
        "median_seconds": {n: round(statistics.median(s), 3) for n, s in seconds.items()},
        "seconds": {n: [round(x, 3) for x in s] for n, s in seconds.items()},
        "reps": args.reps,
        "malloc_switch": os.environ.get("PRIVQUANT_MALLOC", "tuned"),
        "machine": machine_info(),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
