"""Learned step sizes (LSQ) against frozen ones, from a poor and from a good initial grid.

    PYTHONPATH=src python benchmarks/lsq_init.py [--seeds 0 1 2]

Per seed: the small CNN trained 4 epochs on 8,000 Fashion-MNIST rows (fp32, NCHW, so hosts
compare), then 2-bit per-tensor weights on every layer, initialized by min-max (a poor grid at 2
bits: one level covers the rare largest weight) or by MSE calibration (privquant's default), and
one epoch of QAT at lr 0.01 with the step sizes frozen or learned (LSQ, Esser et al. 2020, with
its 1/sqrt(N * Qp) gradient scale). Accuracy on 4,000 test rows; the step sizes before and after.
Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np
import torch

from privquant.data import load_dataset
from privquant.machine import machine_info
from privquant.quant import QuantConfig, quant_layers, quantize
from privquant.training import TrainConfig, Trainer, evaluate, train_new_model

RECIPE = {"precision": "fp32", "channels_last": False}


def scales(model: torch.nn.Module) -> list[float]:
    return [round(float(layer.scale.detach()), 5) for layer in quant_layers(model).values()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    warnings.filterwarnings("ignore", message="batchnorm='train'")
    ds = load_dataset("fashion-mnist")
    x, y = ds.x_train[:8000], ds.y_train[:8000]

    def accuracy(model: torch.nn.Module) -> float:
        return evaluate(model, ds.x_test[:4000], ds.y_test[:4000])["accuracy"]

    runs = []
    start = time.perf_counter()
    for seed in args.seeds:
        train = TrainConfig(epochs=4, seed=seed, **RECIPE)
        model, _ = train_new_model("small_cnn", x, y, 10, train, progress=False)
        row = {"seed": seed, "fp32_accuracy": accuracy(model)}
        for calibration in ("minmax", "mse"):
            for lsq in (False, True):
                cfg = QuantConfig(weight_bits=2, first_last_bits=None, calibration=calibration,
                                  granularity="per_tensor", learn_scale=lsq)  # fmt: skip
                q = quantize(model, cfg)
                before, ptq = scales(q), accuracy(q)
                Trainer(TrainConfig(epochs=1, lr=0.01, seed=seed, **RECIPE)).fit(
                    q, x, y, progress=False
                )
                row[f"{calibration}_{'lsq' if lsq else 'frozen'}"] = {
                    "ptq_accuracy": ptq, "qat_accuracy": accuracy(q),
                    "scales_before": before, "scales_after": scales(q),
                }  # fmt: skip
        runs.append(row)
        print(
            json.dumps({"seed": seed, "seconds": round(time.perf_counter() - start, 1)}), flush=True
        )
    gain = {c: [r[f"{c}_lsq"]["qat_accuracy"] - r[f"{c}_frozen"]["qat_accuracy"] for r in runs]
            for c in ("minmax", "mse")}  # fmt: skip
    print(json.dumps({
        "benchmark": "lsq_init",
        "lsq_minus_frozen_points": {c: [round(100 * g, 2) for g in v] for c, v in gain.items()},
        "lsq_minus_frozen_mean_points": {c: round(100 * float(np.mean(v)), 2) for c, v in gain.items()},
        "runs": runs,
        "machine": machine_info(),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
