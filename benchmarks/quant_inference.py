"""Inference speed and accuracy: fp32 eager, ONNX Runtime fp32, and the integer ONNX export.

    python benchmarks/quant_inference.py [--model small_cnn] [--epochs 3] [--seconds 3]

Trains the model briefly on CIFAR-10 (10,000 rows; enough for a meaningful accuracy), quantizes
it with PTQ (per-channel weights at --bits, default 8 and 4), and measures at batch 1 and 256:
torch fp32 eager, ORT fp32, our QDQ export (mirrors the fake-quant model; input-only QDQ) and the
integer export (privquant.quant.onnx_int8: ORT fuses it into QLinearConv/QGemm). Accuracy on 2,000
test rows for the fake-quant model and each export; packed file size vs fp32 bytes. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from privquant.data import load_dataset
from privquant.machine import machine_info
from privquant.quant import QuantConfig, calibration_batches, export_quantized, quantize
from privquant.quant.export import fp32_size
from privquant.quant.onnx_export import export_onnx, onnx_logits, onnx_session
from privquant.quant.onnx_int8 import export_onnx_int8
from privquant.training import TrainConfig, evaluate, train_new_model


def throughput(fn, batch: int, seconds: float) -> float:  # noqa: ANN001
    fn()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        n += 1
    return n * batch / (time.perf_counter() - start)


def speeds(run, x: np.ndarray, seconds: float) -> dict[str, float]:  # noqa: ANN001
    out = {}
    for b in (1, 256):
        xb = x[:b]
        out[f"batch_{b}_img_per_s"] = round(throughput(lambda xb=xb: run(xb), b, seconds), 1)
    out["batch_1_latency_ms"] = round(1000 / out["batch_1_img_per_s"], 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="small_cnn")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--bits", type=int, nargs="+", default=[8, 4])
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    ds = load_dataset("cifar10")
    rng = np.random.default_rng(0)
    rows = rng.permutation(len(ds.y_train))[:10_000]
    x, y = ds.x_train[rows], ds.y_train[rows]
    # A seeded sample: this CIFAR-10 file is sorted by class (its first 2,000 rows are two classes).
    test_rows = np.sort(rng.permutation(len(ds.y_test))[:2000])
    x_test, y_test = ds.x_test[test_rows], ds.y_test[test_rows]
    model, _ = train_new_model(args.model, x, y, 10, TrainConfig(epochs=args.epochs, lr=0.05, seed=0),
                               progress=False)  # fmt: skip
    shape = tuple(x.shape[1:])
    xf = (x_test.astype(np.float32) / 255.0)[:256]

    def accuracy(logits: np.ndarray) -> float:
        return float((logits.argmax(1) == y_test).mean())

    out: dict = {"benchmark": "quant_inference", "model": args.model, "input": list(shape),
                 "train": {"rows": len(x), "epochs": args.epochs}}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        export_onnx(model, tmp / "fp32.onnx", shape)
        s_fp = onnx_session(tmp / "fp32.onnx")
        with torch.no_grad():
            out["torch_fp32"] = speeds(lambda b: model(torch.from_numpy(b)), xf, args.seconds)
        out["torch_fp32"]["accuracy"] = evaluate(model, x_test, y_test)["accuracy"]
        out["ort_fp32"] = speeds(lambda b: s_fp.run(None, {"input": b}), xf, args.seconds)
        out["ort_fp32"]["accuracy"] = accuracy(onnx_logits(s_fp, x_test))
        out["fp32_bytes"] = int(fp32_size(model)["total_bytes"])
        for bits in args.bits:
            cfg = QuantConfig(weight_bits=bits, first_last_bits=None)
            q = quantize(model, cfg, calibration_batches(x, 4))
            key = f"w{bits}"
            entry: dict = {"fake_quant_accuracy": evaluate(q, x_test, y_test)["accuracy"]}
            entry["packed_bytes"] = int(export_quantized(q, tmp / key)["size"]["total_bytes"])
            export_onnx(q, tmp / f"{key}_qdq.onnx", shape)
            s_qdq = onnx_session(tmp / f"{key}_qdq.onnx")
            entry["ort_qdq_input_only"] = speeds(
                lambda b, s=s_qdq: s.run(None, {"input": b}), xf, args.seconds
            )
            entry["ort_qdq_input_only"]["accuracy"] = accuracy(onnx_logits(s_qdq, x_test))
            export_onnx_int8(q, tmp / f"{key}_int8.onnx", shape, x[:512])
            s_int = onnx_session(tmp / f"{key}_int8.onnx")
            entry["ort_int8"] = speeds(
                lambda b, s=s_int: s.run(None, {"input": b}), xf, args.seconds
            )
            entry["ort_int8"]["accuracy"] = accuracy(onnx_logits(s_int, x_test))
            entry["ort_int8_onnx_bytes"] = (tmp / f"{key}_int8.onnx").stat().st_size
            entry["ort_int8_vs_ort_fp32_at_256"] = round(
                entry["ort_int8"]["batch_256_img_per_s"] / out["ort_fp32"]["batch_256_img_per_s"], 2
            )
            entry["accuracy_points_int8_minus_fake_quant"] = round(
                100 * (entry["ort_int8"]["accuracy"] - entry["fake_quant_accuracy"]), 2
            )
            out[key] = entry
    import onnxruntime

    out["onnxruntime"] = onnxruntime.__version__
    out["machine"] = machine_info()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
