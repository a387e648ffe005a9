"""Accuracy / size table of PTQ and QAT at 8, 4, 3, 2 and 1.58 bits for one checkpoint.

    python benchmarks/quant_table.py CHECKPOINT [--qat-epochs 2] [--bits 8,4,3,2,1.58]

Weights per channel, symmetric, MSE-calibrated; first and last layer at 8 bits (the default;
``--all-layers`` quantizes them too). Prints JSON with one row per variant.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from privquant.artifacts import load_checkpoint
from privquant.data import load_dataset, seeded_subset
from privquant.machine import machine_info
from privquant.models.info import model_info
from privquant.quant import (
    QuantConfig,
    calibration_batches,
    export_quantized,
    quantization_aware_training,
    quantize,
)
from privquant.training import TrainConfig, evaluate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("--bits", default="8,4,3,2,1.58")
    ap.add_argument("--qat-epochs", type=int, default=2)
    ap.add_argument("--qat-lr", type=float, default=0.01)
    ap.add_argument("--all-layers", action="store_true")
    ap.add_argument("--out", default="runs/quant_table", help="folder for the integer exports")
    args = ap.parse_args()
    model, meta = load_checkpoint(args.checkpoint)
    ds = load_dataset(meta["train"]["dataset"])
    n = meta["train"]["train_size"]
    # The checkpoint's own training rows: `privquant train` draws them with its seed.
    seed = meta["train"].get("train_rows_seed", 0)
    rows = seeded_subset(len(ds.y_train), n, seed)
    x, y = ds.x_train[rows], ds.y_train[rows]
    calib = calibration_batches(x, 8)
    fp = evaluate(model, ds.x_test, ds.y_test)["accuracy"]
    n_params = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    rows = [
        {
            "variant": "FP32",
            "bits": 32,
            "test_accuracy": fp,
            "size_bytes": 4 * n_params,
            "avg_bits": 32.0,
        }
    ]
    first_last = None if args.all_layers else 8
    variants = [
        ("PTQ w8a8", QuantConfig(weight_bits=8, act_bits=8, first_last_bits=first_last), "ptq")
    ]
    for b in args.bits.split(","):
        bits = float(b) if b == "1.58" else int(b)
        variants.append(
            (f"PTQ {b}-bit", QuantConfig(weight_bits=bits, first_last_bits=first_last), "ptq")
        )
        variants.append(
            (f"QAT {b}-bit", QuantConfig(weight_bits=bits, first_last_bits=first_last), "qat")
        )
    for name, cfg, method in variants:
        start = time.perf_counter()
        if method == "qat":
            tcfg = TrainConfig(
                epochs=args.qat_epochs, lr=args.qat_lr, augment=meta["train"]["config"]["augment"]
            )
            q, _ = quantization_aware_training(model, cfg, x, y, tcfg, calib, progress=False)
        else:
            q = quantize(model, cfg, calib)
        seconds = time.perf_counter() - start
        model_info(q).spec = meta["model"]
        manifest = export_quantized(q, Path(args.out) / name.replace(" ", "_"))
        acc = evaluate(q, ds.x_test, ds.y_test)["accuracy"]
        rows.append({"variant": name, "bits": cfg.weight_bits, "act_bits": cfg.act_bits, "test_accuracy": acc,
                     "delta_vs_fp32": acc - fp, "size_bytes": manifest["size"]["total_bytes"],
                     "avg_bits": manifest["size"]["avg_bits_per_quantized_weight"], "seconds": round(seconds, 1)})  # fmt: skip
        print(json.dumps(rows[-1]), file=sys.stderr)
    print(json.dumps({"benchmark": "quant_table", "checkpoint": args.checkpoint, "model": meta["model"]["name"],
                      "dataset": ds.name, "train_size": n, "qat_epochs": args.qat_epochs, "qat_lr": args.qat_lr,
                      "first_last_bits": first_last, "rows": rows, "machine": machine_info()}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
