"""Querying a model for the audit: fp32 in NCHW (what predict_logits does) against channels_last.

A size-3 audit spends a third of its wall time querying (part 1: 37%), and queries run in fp32 NCHW
whatever precision trained the model, so that the logits are exact. channels_last keeps fp32 (the
logits move in the last bits only, checked here) and may be faster on CPUs where oneDNN prefers it;
bf16 is timed for comparison only (it changes the logits the attacks read, so it is not a candidate).
Last, per model, the layout the audit's own measured choice (``privquant.signals.layout``) picks.
Each setting runs in turn, ``--reps`` times, on the same rows: the original and its flip, as the
audit queries them; medians reported.

    python benchmarks/query_layout.py [--rows 4096] [--reps 3] [--batch-size 1024]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from privquant.defenses.dp_sgd import prepare_for_dp
from privquant.machine import machine_info
from privquant.models import build_model
from privquant.signals import layout
from privquant.signals.query import query_views
from privquant.training.precision import CACHE_ENV
from privquant.training.trainer import to_model_input

SETTINGS = ("fp32", "fp32+channels_last", "bf16+channels_last")


def _models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    plain = build_model("resnet20", [3, 32, 32], 10).eval()
    grouped = build_model("resnet20", [3, 32, 32], 10)
    prepare_for_dp(grouped)  # DP-SGD's models: GroupNorm
    return {"resnet20": plain, "resnet20_groupnorm": grouped.eval()}


@torch.inference_mode()
def _query(model: nn.Module, x: torch.Tensor, setting: str, batch_size: int) -> torch.Tensor:
    channels_last = setting.endswith("channels_last")
    model = model.to(
        memory_format=torch.channels_last if channels_last else torch.contiguous_format
    )
    flip = query_views("image", 2, 0)[0]
    outs = []
    for s in range(0, len(x), batch_size):
        xb = to_model_input(x[s : s + batch_size])
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=setting.startswith("bf16")):
            outs.append(torch.stack([model(xb), model(flip(xb))], 1).float())
    return torch.cat(outs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=4096)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=1024)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.integers(0, 256, (args.rows, 3, 32, 32), dtype=np.uint8))
    out: dict = {"machine": machine_info(), "rows": args.rows, "views": 2, "batch_size": args.batch_size,
                 "reps": args.reps, "models": {}}  # fmt: skip
    for name, model in _models().items():
        reference = _query(model, x[:256], "fp32", args.batch_size)
        seconds: dict[str, list[float]] = {s: [] for s in SETTINGS}
        for setting in SETTINGS:
            _query(model, x[:256], setting, args.batch_size)  # warm-up: oneDNN picks its kernels
        for _ in range(args.reps):
            for setting in SETTINGS:  # interleaved, so a slow spell of the host hits all alike
                start = time.perf_counter()
                _query(model, x, setting, args.batch_size)
                seconds[setting].append(time.perf_counter() - start)
        result = {}
        for setting in SETTINGS:
            logits = _query(model, x[:256], setting, args.batch_size)
            result[setting] = {
                "images_per_s": round(2 * args.rows / statistics.median(seconds[setting]), 1),
                "max_abs_logit_diff_vs_fp32": float((logits - reference).abs().max()),
                "argmax_agrees": float((logits.argmax(-1) == reference.argmax(-1)).float().mean()),
            }
        base = result["fp32"]["images_per_s"]
        for setting in SETTINGS:
            result[setting]["speedup_vs_fp32_nchw"] = round(
                result[setting]["images_per_s"] / base, 3
            )
        # What the audit's measured choice (privquant.signals.layout) picks here, timed afresh.
        with tempfile.TemporaryDirectory() as tmp:
            os.environ[CACHE_ENV] = str(Path(tmp) / "machine.json")
            layout.CHOICES.clear()
            result["query_layout_choice"] = layout.query_layout(model, x[:256].numpy())
            result["query_layout_timing"] = json.loads(Path(os.environ.pop(CACHE_ENV)).read_text())
        out["models"][name] = result
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
