"""ONNX export of a quantized model as a QDQ graph, and a check with ONNX Runtime.

Weights become QuantizeLinear/DequantizeLinear pairs on constants (folded to integer
initializers by the runtime); 8-bit activations become QDQ pairs on each quantized layer's
input, which lets ONNX Runtime run integer kernels.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from privquant.artifacts.atomic import atomic_path
from privquant.errors import PrivquantError
from privquant.quant.apply import quant_layers
from privquant.quant.modules import QuantLayer


@contextlib.contextmanager
def _onnx_mode(model: nn.Module) -> Iterator[None]:
    layers = list(quant_layers(model).values())
    for layer in layers:
        if layer.act_bits not in (None, 8) and layer.act_enabled:
            raise PrivquantError(
                f"ONNX export supports 8-bit activations only, got act_bits={layer.act_bits}"
            )
        layer.export_forward = onnx_forward
    try:
        yield
    finally:
        for layer in layers:
            layer.export_forward = None


def onnx_forward(layer: QuantLayer, x: torch.Tensor) -> torch.Tensor:
    """The layer's computation written with ops that export as QuantizeLinear/DequantizeLinear.

    The weight is first snapped to the grid, so re-quantizing it in the int8 (or uint8) container
    reproduces the low-bit codes exactly.
    """
    with torch.no_grad():
        w = layer.quantized_weight()
    symmetric = bool((layer.zero == 0).all())
    qmin, qmax = (-128, 127) if symmetric else (0, 255)
    if layer.per_channel:
        w = torch.fake_quantize_per_channel_affine(
            w, layer.scale.flatten().float(), layer.zero.flatten().int(), 0, qmin, qmax
        )
    else:
        w = torch.fake_quantize_per_tensor_affine(
            w, float(layer.scale), int(layer.zero), qmin, qmax
        )
    if layer.act_bits and layer.act_enabled:
        x = torch.fake_quantize_per_tensor_affine(
            x, float(layer.act_scale), int(layer.act_zero), 0, 255
        )
    if isinstance(layer.layer, nn.Conv2d):
        return layer.layer._conv_forward(x, w, layer.layer.bias)
    return nn.functional.linear(x, w, layer.layer.bias)


def export_onnx(
    model: nn.Module, path: str | os.PathLike[str], input_shape: tuple[int, ...], opset: int = 17
) -> Path:
    """Write ``model`` as ONNX (QDQ for quantized layers; plain graph for a float model)."""
    path = Path(path)
    dummy = torch.rand(1, *input_shape)
    with _onnx_mode(model), warnings.catch_warnings(), atomic_path(path) as tmp:
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model.eval(), (dummy,), str(tmp), input_names=["input"], output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=opset, dynamo=False,
        )  # fmt: skip
    return path


def onnx_session(path: str | os.PathLike[str], threads: int | None = None) -> Any:
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise PrivquantError("onnxruntime is not installed; pip install 'privquant[onnx]'") from e
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def onnx_logits(session: Any, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    xf = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    return np.concatenate(
        [
            session.run(None, {"input": xf[i : i + batch_size]})[0]
            for i in range(0, len(xf), batch_size)
        ]
    )
