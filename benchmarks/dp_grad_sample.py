"""Per-example gradients for DP-SGD on CPU: Opacus' three ways, timed on the study's model.

DP-SGD's cost is the per-example gradient (docs/results/dp_throughput.md). Opacus computes it with
module hooks (unfold + einsum per conv layer: what privquant uses), with functorch (``vmap`` over
``grad`` of each layer), or with torch's expanded weights (``ew``). This times one clipped,
summed gradient (forward, backward, per-example norms, clip, sum) per step for each, on ResNet-20
with GroupNorm (what ``dp_sgd`` trains), and checks that all three give the same gradient.

    python benchmarks/dp_grad_sample.py [--batch-size 128] [--steps 8]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import torch
from torch import nn

from privquant.defenses.dp_sgd import per_example_module, prepare_for_dp
from privquant.machine import machine_info
from privquant.models import build_model

MODES = ("hooks", "functorch", "ew")


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = build_model("resnet20", [3, 32, 32], 10)
    prepare_for_dp(model)  # as dp_sgd trains it
    return model


def _clipped_sum(mode: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    from opacus import GradSampleModule

    if mode == "functorch":  # not one of dp_sgd's ways: timed for comparison
        gsm = GradSampleModule(model, loss_reduction="mean", force_functorch=True)
    else:  # as dp_sgd computes them (per_example: hooks | expanded_weights)
        gsm = per_example_module(model, "expanded_weights" if mode == "ew" else "hooks")
    loss = nn.functional.cross_entropy(gsm(x), y)
    loss.backward()
    params = [p for p in model.parameters() if p.requires_grad]
    samples = [p.grad_sample.reshape(len(x), -1) for p in params]
    norms = torch.stack([s.norm(2, dim=1) for s in samples], dim=1).norm(2, dim=1)
    factor = (1.0 / (norms + 1e-6)).clamp(max=1.0)
    flat = torch.cat([(s * factor[:, None]).sum(0) for s in samples])
    for p in params:
        p.grad, p.grad_sample = None, None
    if hasattr(gsm, "_close"):
        gsm._close()
    return flat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=8)
    args = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch_size, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (args.batch_size,), generator=g)
    out: dict = {"batch_size": args.batch_size, "steps": args.steps, "modes": {}}
    reference = None
    for mode in MODES:
        model = _model()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                grad = _clipped_sum(mode, model, x, y)  # warm-up, and the gradient compared
                start = time.perf_counter()
                for _ in range(args.steps):
                    _clipped_sum(mode, model, x, y)
                seconds = (time.perf_counter() - start) / args.steps
        except Exception as e:  # a mode that does not support a layer: say so, go on
            out["modes"][mode] = {"error": f"{type(e).__name__}: {e}"[:300]}
            continue
        reference = grad if reference is None else reference
        out["modes"][mode] = {"seconds_per_step": round(seconds, 4),
                              "examples_per_s": round(args.batch_size / seconds, 1),
                              "max_abs_diff_vs_hooks": float((grad - reference).abs().max())}  # fmt: skip
    out["machine"] = machine_info()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
