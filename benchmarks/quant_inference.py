"""Inference speed: fp32 PyTorch vs fp32 ONNX Runtime vs int8 (QDQ, w8a8) ONNX Runtime.

    python benchmarks/quant_inference.py [--model small_cnn] [--batch-size 256] [--seconds 3]

The int8 model is our own quantization (per-channel 8-bit weights, 8-bit activations,
calibrated on random images) exported as a QDQ graph; ONNX Runtime turns it into integer
kernels. Prints JSON with images/s and the speed-ups.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from privquant.machine import machine_info
from privquant.models import build_model
from privquant.quant import QuantConfig, quantize
from privquant.quant.onnx_export import export_onnx, onnx_session


def throughput(fn, batch: int, seconds: float) -> float:  # noqa: ANN001
    fn()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        n += 1
    return n * batch / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="small_cnn")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    torch.manual_seed(0)
    shape = (3, 32, 32)
    model = build_model(args.model, shape, 10).eval()
    x = torch.rand(args.batch_size, *shape)
    calib = [torch.rand(128, *shape) for _ in range(4)]
    q = quantize(model, QuantConfig(weight_bits=8, act_bits=8, calibration="minmax"), calib)
    with tempfile.TemporaryDirectory() as tmp:
        export_onnx(model, Path(tmp) / "fp32.onnx", shape)
        export_onnx(q, Path(tmp) / "int8.onnx", shape)
        s_fp, s_q = onnx_session(Path(tmp) / "fp32.onnx"), onnx_session(Path(tmp) / "int8.onnx")
        xn = x.numpy()
        with torch.no_grad():
            torch_fp32 = throughput(lambda: model(x), args.batch_size, args.seconds)
            torch_fake = throughput(lambda: q(x), args.batch_size, args.seconds)
        ort_fp32 = throughput(lambda: s_fp.run(None, {"input": xn}), args.batch_size, args.seconds)
        ort_int8 = throughput(lambda: s_q.run(None, {"input": xn}), args.batch_size, args.seconds)
        agree = float((s_q.run(None, {"input": xn})[0].argmax(1) == q(x).argmax(1).numpy()).mean())
    import onnxruntime

    print(json.dumps({
        "benchmark": "quant_inference",
        "model": args.model,
        "input": list(shape),
        "batch_size": args.batch_size,
        "img_per_s": {
            "torch_fp32": round(torch_fp32, 1),
            "torch_fake_quant_w8a8": round(torch_fake, 1),
            "onnxruntime_fp32": round(ort_fp32, 1),
            "onnxruntime_int8_qdq": round(ort_int8, 1),
        },
        "speedup_int8_vs_torch_fp32": round(ort_int8 / torch_fp32, 2),
        "speedup_int8_vs_ort_fp32": round(ort_int8 / ort_fp32, 2),
        "int8_vs_fake_quant_argmax_agreement": agree,
        "onnxruntime": onnxruntime.__version__,
        "machine": machine_info(),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
