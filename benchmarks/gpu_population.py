"""Models per hour when a population trains K models at once (the stacked trainer) vs one by one.

One call, prepared for a GPU machine (issue 24, item 3); it runs on CPU as well, where it gives
the per-model CPU time the GPU numbers are compared with:

    python benchmarks/gpu_population.py                       # CUDA if present: K = 1, 8, 64
    python benchmarks/gpu_population.py --k 1 8 --steps 6     # a CPU host: per-model time, K = 8

For each model (the small CNN and ResNet-20 on 32x32x3 inputs) it times training steps of
``privquant.training.Trainer`` (one model, the ordinary path) and of
``privquant.training.stacked.fit_stacked`` with K models (after a warm-up run), and converts the
step times into models per hour for a recipe (default: the 5,000-member CIFAR-10 study, 30
epochs at batch 128). It then times querying 64 models on the audit's rows and prints the wall
time of a 64-model audit's training and querying at the fastest K (the attacks run on saved
outputs and take seconds; they are not part of this figure). The rows are synthetic uint8 images:
step time does not depend on their content. Prints JSON with the machine.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Any

import numpy as np
import torch

from privquant.machine import machine_info
from privquant.models import build_model
from privquant.training import TrainConfig, Trainer
from privquant.training.device import resolve_device, seed_everything
from privquant.training.stacked import fit_stacked
from privquant.training.trainer import predict_logits


def _models(name: str, k: int) -> list[torch.nn.Module]:
    out = []
    for i in range(k):
        seed_everything(i)
        out.append(build_model(name, (3, 32, 32), 10))
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_alone(name: str, cfg: TrainConfig, x: np.ndarray, y: np.ndarray, steps: int) -> float:
    """Seconds per training step of one model on the ordinary path (after a warm-up)."""
    rows = cfg.batch_size * steps
    model = _models(name, 1)[0]
    Trainer(cfg.model_copy(update={"epochs": 1})).fit(model, x[: cfg.batch_size * 2],
                                                      y[: cfg.batch_size * 2], progress=False)  # fmt: skip
    result = Trainer(cfg.model_copy(update={"epochs": 1})).fit(
        model, x[:rows], y[:rows], progress=False
    )
    return result.seconds / steps


def time_stacked(
    name: str, cfg: TrainConfig, x: np.ndarray, y: np.ndarray, k: int, steps: int
) -> float:
    """Seconds per stacked step of ``k`` models (each on its own rows), after a warm-up."""
    rows = cfg.batch_size * steps
    rng = np.random.default_rng(0)
    members = [rng.choice(len(x), rows, replace=False) for _ in range(k)]
    cfgs = [cfg.model_copy(update={"epochs": 1, "seed": i}) for i in range(k)]
    warm = [m[: cfg.batch_size * 2] for m in members]
    fit_stacked(_models(name, k), x, y, warm, cfgs, progress=False)
    results = fit_stacked(_models(name, k), x, y, members, cfgs, progress=False)
    return results[0].seconds / steps


def time_queries(name: str, rows: int, device: torch.device, n_models: int = 4) -> float:
    """Seconds to query one model on ``rows`` images with the original and its flip."""
    x = np.random.default_rng(1).integers(0, 256, (rows, 3, 32, 32), dtype=np.uint8)
    models = _models(name, n_models)
    predict_logits(models[0], x[:256], device=device)  # warm-up
    start = time.perf_counter()
    for m in models:
        predict_logits(m, x, device=device, views=[lambda b: b.flip(3)])
    _sync(device)
    return (time.perf_counter() - start) / n_models


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["small_cnn", "resnet20"])
    p.add_argument("--k", nargs="+", type=int, default=[1, 8, 64], help="models at once")
    p.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    p.add_argument("--members", type=int, default=5000, help="recipe: rows per model")
    p.add_argument("--epochs", type=int, default=30, help="recipe: epochs")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--query-rows", type=int, default=16000, help="rows each model is queried on")
    p.add_argument("--audit-models", type=int, default=64)
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    args = p.parse_args()

    device = resolve_device("auto")
    # Enough distinct rows for the largest stacked measurement's members.
    n_rows = max(args.batch_size * args.steps * 2, 4096)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n_rows, 3, 32, 32), dtype=np.uint8)
    y = rng.integers(0, 10, n_rows)
    steps_per_model = args.epochs * math.ceil(args.members / args.batch_size)
    out: dict[str, Any] = {
        "benchmark": "gpu_population",
        "device": str(device),
        "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
        "recipe": {
            "members": args.members,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "augment": "crop+flip",
            "steps_per_model": steps_per_model,
        },  # fmt: skip
        "models": {},
        "machine": machine_info(),
    }
    for name in args.models:
        cfg = TrainConfig(batch_size=args.batch_size, lr=0.1, augment="crop+flip",
                          precision=args.precision, channels_last="auto")  # fmt: skip
        if device.type == "cpu" and args.precision == "auto":
            from privquant.training.precision import resolve_train_config

            sample = torch.as_tensor(x[:64]).float().div_(255)
            cfg = resolve_train_config(cfg, _models(name, 1)[0], sample,
                                       torch.as_tensor(y[:64]), name)  # fmt: skip
        alone = time_alone(name, cfg, x, y, args.steps)
        entry: dict[str, Any] = {
            "precision": cfg.precision,
            "channels_last": cfg.channels_last,
            "alone": {
                "seconds_per_step": alone,
                "models_per_hour": 3600 / (alone * steps_per_model),
            },
            "stacked": {},
        }
        for k in args.k:
            per_step = time_stacked(name, cfg, x, y, k, args.steps)
            entry["stacked"][str(k)] = {
                "seconds_per_step": per_step,
                "models_per_hour": 3600 * k / (per_step * steps_per_model),
                "speedup_vs_alone": k * alone / per_step,
            }
            print(f"{name} K={k}: {entry['stacked'][str(k)]}", file=sys.stderr, flush=True)
        best = max(
            [("alone", entry["alone"]["models_per_hour"])]
            + [(k, v["models_per_hour"]) for k, v in entry["stacked"].items()],
            key=lambda t: t[1],
        )
        query = time_queries(name, args.query_rows, device)
        train_wall = args.audit_models / best[1] * 3600
        entry["query_seconds_per_model"] = query
        entry[f"audit_{args.audit_models}_models"] = {
            "best_k": best[0],
            "train_seconds": train_wall,
            "query_seconds": query * args.audit_models,
            "wall_seconds_train_and_query": train_wall + query * args.audit_models,
        }
        out["models"][name] = entry
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
