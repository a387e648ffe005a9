"""DP-SGD training throughput: what a tuned DP-SGD baseline costs on this machine.

Trains the real DP path (``privquant.defenses.dp_sgd.dp_train``: Opacus per-example gradients, fp32,
BatchNorm -> GroupNorm, Poisson batches, crop + flip) for one epoch of CIFAR-10-shaped data at each
augmentation multiplicity, beside plain training of the same model, and prints JSON: sampled rows/s,
per-example gradients/s (rows x K), the slowdown vs plain training, and the minutes one model of a
study config would take (members x epochs x K / rate), so DP parts are sized from a measurement.

    python benchmarks/dp_throughput.py [--model resnet20] [--rows 2048] [--multiplicity 1 4]
        [--members 12500 --epochs 30]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from privquant.defenses import DefenseContext
from privquant.defenses.dp_sgd import DPSGD, dp_train
from privquant.machine import machine_info
from privquant.population import model_factory
from privquant.training import TrainConfig


def _context(model: str, rows: int, batch_size: int) -> DefenseContext:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(rows, 3, 32, 32), dtype=np.uint8)
    y = rng.integers(0, 10, size=rows)
    train = TrainConfig(epochs=1, batch_size=batch_size, augment="crop+flip", precision="fp32")
    return DefenseContext(x=x, y=y, x_reference=None, y_reference=None, num_classes=10, train=train,
                          seed=0, model_fn=model_factory(model, 10))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--rows", type=int, default=2048, help="rows trained on for one epoch")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--multiplicity", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--per-example", nargs="+", default=["hooks"], choices=["hooks", "expanded_weights"],
                    help="how per-example gradients are computed (dp_sgd's per_example)")  # fmt: skip
    ap.add_argument("--members", type=int, default=12500, help="members per model of the study")
    ap.add_argument("--epochs", type=int, default=30, help="DP epochs of the study")
    args = ap.parse_args()
    ctx = _context(args.model, args.rows, args.batch_size)

    start = time.perf_counter()
    ctx.train_fresh()
    plain = args.rows / (time.perf_counter() - start)
    auto = ctx.train.model_copy(update={"precision": "auto"})  # what a plain population uses
    ctx.train_fresh(train=auto)  # the first call measures and caches the choice
    start = time.perf_counter()
    ctx.train_fresh(train=auto)
    plain_auto = args.rows / (time.perf_counter() - start)
    out: dict = {"model": args.model, "rows": args.rows, "batch_size": args.batch_size,
                 "plain_fp32_rows_per_s": plain, "plain_auto_rows_per_s": plain_auto, "dp": []}  # fmt: skip
    for k in args.multiplicity:
        for way in args.per_example:
            start = time.perf_counter()
            dp_train(DPSGD(noise_multiplier=1.0, augment_multiplicity=k, per_example=way), ctx)
            rate = args.rows / (time.perf_counter() - start)
            out["dp"].append(_row(args, k, way, rate, plain, plain_auto))
    out["study"] = {"members": args.members, "epochs": args.epochs}
    out["machine"] = machine_info()
    print(json.dumps(out, indent=2))


def _row(
    args: argparse.Namespace, k: int, way: str, rate: float, plain: float, plain_auto: float
) -> dict:
    return {"augment_multiplicity": k, "per_example": way, "rows_per_s": rate, "example_gradients_per_s": rate * k,
            "slowdown_vs_plain_fp32": plain / rate, "slowdown_vs_plain_auto": plain_auto / rate,
            "minutes_per_study_model": args.members * args.epochs / rate / 60}  # fmt: skip


if __name__ == "__main__":
    main()
