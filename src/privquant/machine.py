"""Machine description embedded in every benchmark and results file."""

from __future__ import annotations

import os
import platform
import subprocess
from typing import Any

import torch

import privquant
from privquant.malloc import TUNED_MALLOC, malloc_setting, tuned_malloc_environ  # noqa: F401 (their old home)
from privquant.training.precision import recorded_choices


def cpu_name() -> str:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return cpu


def training_device(device: torch.device) -> str:
    """Where a model trains, as its checkpoint records it (e.g. ``cpu: AMD EPYC, torch 2.13.0+cpu``).

    Cache keys leave the device out on purpose: a model carried from a GPU session is found on a
    CPU host, and a study spread over hosts is one population. Its numbers differ in the last bits
    from a CPU-trained one, so where each model trained is recorded here and summed up in
    results.json (``machine.trained_on``)."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return f"{device.type}: {name}, torch {torch.__version__}"


def machine_info() -> dict[str, Any]:
    cpu = cpu_name()
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit = ""
    mem = (
        os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        if hasattr(os, "sysconf")
        else None
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": round(mem, 1) if mem else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "commit": commit,
        "privquant": privquant.__version__,
        "malloc": malloc_setting(),
        # What ``precision: auto`` resolved to here, with the measured images/s of each candidate.
        "precision": recorded_choices(),
    }
