"""Training throughput: privquant's trainer vs a plain fp32 PyTorch loop, in one run.

Prints JSON: images/s for each model and path, the speed-up ratio, the machine's measured bf16
(and fp32) matmul peak, and the fraction of the bf16 peak each training path reaches.

    python benchmarks/train_throughput.py [--steps 30] [--batch-size 256]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from torch import nn

from privquant.machine import machine_info
from privquant.models import build_model
from privquant.training import TrainConfig, Trainer


def _has_amx() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return "amx_bf16" in f.read()
    except OSError:
        return False


def matmul_peak(dtype: torch.dtype, n: int = 4096, seconds: float = 2.0) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up (oneDNN kernel selection)
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - start)


def forward_flops(model: nn.Module, shape: tuple[int, ...]) -> float:
    """Multiply-accumulates of conv and linear layers x 2, for one image."""
    total = 0

    def hook(mod: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            total += (
                2
                * out.numel()
                * mod.in_channels
                // mod.groups
                * mod.kernel_size[0]
                * mod.kernel_size[1]
            )
        elif isinstance(mod, nn.Linear):
            total += 2 * out.numel() * mod.in_features

    hs = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    with torch.no_grad():
        model(torch.rand(1, *shape))
    for h in hs:
        h.remove()
    return float(total)


def plain_fp32_loop(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, bs: int, steps: int
) -> float:
    """What a user writes without thinking about the CPU: NCHW, fp32, SGD."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()

    def step(i: int) -> None:
        idx = torch.randint(0, len(x), (bs,))
        loss = nn.functional.cross_entropy(model(x[idx].float() / 255), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()

    for i in range(3):
        step(i)
    start = time.perf_counter()
    for i in range(steps):
        step(i)
    return steps * bs / (time.perf_counter() - start)


def privquant_trainer(
    name: str, x: torch.Tensor, y: torch.Tensor, bs: int, steps: int
) -> tuple[float, str]:
    cfg = TrainConfig(epochs=1, batch_size=bs, augment="none")  # same work as the plain loop
    model = build_model(name, (3, 32, 32), 10)
    Trainer(cfg).fit(model, x[: 3 * bs], y[: 3 * bs], progress=False)  # warm-up
    result = Trainer(cfg).fit(model, x[: steps * bs], y[: steps * bs], progress=False)
    return steps * bs / result.seconds, result.precision


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--models", default="small_cnn,resnet20")
    args = ap.parse_args()
    torch.manual_seed(0)
    n = args.steps * args.batch_size
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (n, 3, 32, 32), dtype=np.uint8))
    y = torch.randint(0, 10, (n,))
    peak_bf16, peak_fp32 = matmul_peak(torch.bfloat16), matmul_peak(torch.float32)
    results = {}
    for name in args.models.split(","):
        flops_per_img = 3 * forward_flops(
            build_model(name, (3, 32, 32), 10), (3, 32, 32)
        )  # fwd + bwd
        plain = plain_fp32_loop(
            build_model(name, (3, 32, 32), 10), x, y, args.batch_size, args.steps
        )
        ours, precision = privquant_trainer(name, x, y, args.batch_size, args.steps)
        results[name] = {
            "plain_fp32_img_s": round(plain, 1),
            "privquant_img_s": round(ours, 1),
            "privquant_precision": precision,
            "ratio": round(ours / plain, 2),
            "train_gflop_per_img": round(flops_per_img / 1e9, 4),
            "privquant_fraction_of_bf16_peak": round(ours * flops_per_img / peak_bf16, 4),
            "plain_fraction_of_fp32_peak": round(plain * flops_per_img / peak_fp32, 4),
        }
    print(json.dumps({
        "benchmark": "train_throughput",
        "batch_size": args.batch_size,
        "steps": args.steps,
        "matmul_peak_tflops": {"bf16": round(peak_bf16 / 1e12, 3), "fp32": round(peak_fp32 / 1e12, 3)},
        # ~2x without AMX (AVX512-BF16 only), ~5x with AMX: read the speed-ups against this ratio.
        "bf16_over_fp32_gemm": round(peak_bf16 / peak_fp32, 2),
        "cpu_has_amx": _has_amx(),
        "models": results,
        "target_ratio": 3.5,
        "machine": machine_info(),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
