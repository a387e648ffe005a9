"""The memory layout audit queries run in: fp32 NCHW or fp32 channels_last, measured per model.

Querying is a third of a large audit's wall time, and which layout is faster depends on the model:
on a Zen 4 host channels_last queried a BatchNorm ResNet-20 1.15-1.8x faster, while its GroupNorm
(DP-SGD) twin measured 0.80-1.17x across runs (docs/results/query_layout.md). Both stay fp32, so the
logits the attacks read agree to 5e-6 (bf16 would move them by 1e-2 and is not a candidate). The
choice is timed once per machine and model shape and cached beside ``precision: auto``'s, and the
first timing stands, so every process of a run, and every rerun on this machine, queries a model
the same way and reads the same numbers (delete the cache file to time again).
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from privquant.training.precision import (
    cpu_share,
    decide_once,
    machine_identity,
    model_signature,
    start_clock,
)
from privquant.training.trainer import to_model_input

MARGIN = 0.05  # NCHW, the layout models are saved in, unless channels_last is clearly faster
TIMING_ROWS = 256
SECONDS_PER_LAYOUT = 0.3
NCHW, CHANNELS_LAST = "nchw", "channels_last"

# The layouts this process chose, per model signature (not timed twice in one process).
CHOICES: dict[str, str] = {}


@torch.no_grad()
def rows_per_second(model: nn.Module, xb: torch.Tensor, layout: str, seconds: float) -> float:
    """Rows per second of ``model``'s fp32 inference on the model-input batch ``xb`` in ``layout``
    (at least ``seconds`` and two batches; the model is handed back in NCHW)."""
    channels_last = layout == CHANNELS_LAST
    model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    try:
        xb = xb.contiguous(memory_format=torch.channels_last) if channels_last else xb
        model(xb)  # warm-up: oneDNN picks its kernels on the first call
        done, start = 0, time.perf_counter()
        while done < 2 * len(xb) or time.perf_counter() - start < seconds:
            model(xb)
            done += len(xb)
        return done / (time.perf_counter() - start)
    finally:
        model.to(memory_format=torch.contiguous_format)


def query_layout(model: nn.Module, x: np.ndarray | torch.Tensor) -> str:
    """``channels_last`` or ``nchw``: the faster fp32 layout to query ``model`` on rows like ``x``
    here (tables and GPUs: ``nchw``, nothing to choose)."""
    x_t = torch.as_tensor(x[:TIMING_ROWS])
    param = next(model.parameters(), None)
    if x_t.dim() != 4 or not len(x_t) or param is None or param.device.type != "cpu":
        return NCHW
    xb = to_model_input(x_t)
    key = hashlib.sha256(json.dumps(["query_layout", machine_identity(),
                                     model_signature(model, xb, len(xb))]).encode()).hexdigest()  # fmt: skip
    if key in CHOICES:
        return CHOICES[key]
    was_training = model.training
    model.eval()

    def measure() -> tuple[str, dict[str, Any], float]:
        clock = start_clock()
        speeds = {NCHW: rows_per_second(model, xb, NCHW, SECONDS_PER_LAYOUT)}
        try:
            speeds[CHANNELS_LAST] = rows_per_second(model, xb, CHANNELS_LAST, SECONDS_PER_LAYOUT)
        except RuntimeError:  # a layer that needs contiguous inputs (e.g. a user's .view())
            speeds[CHANNELS_LAST] = 0.0
        share = cpu_share(clock)
        layout = CHANNELS_LAST if speeds[CHANNELS_LAST] > speeds[NCHW] * (1 + MARGIN) else NCHW
        return layout, {"query_layout": layout,
                        "rows_per_second": {k: round(v, 1) for k, v in speeds.items()}}, share  # fmt: skip

    def from_entry(entry: dict[str, Any]) -> str | None:
        layout = entry.get("query_layout")
        return layout if layout in (NCHW, CHANNELS_LAST) else None

    try:
        # The first timing stands, even on a shared CPU: a slower layout costs only speed, while
        # a change between the processes of one run would move its logits in the last bits.
        CHOICES[key] = decide_once(key, from_entry, measure, retime_shared=False)
    finally:
        model.train(was_training)
    return CHOICES[key]
