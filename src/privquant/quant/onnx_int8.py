"""An ONNX export that ONNX Runtime runs on integer kernels (the deployable fast path).

Our QDQ export (:mod:`privquant.quant.onnx_export`) mirrors the fake-quant model exactly but
quantizes only layer inputs, so ONNX Runtime keeps float convolutions (measured 0.7x fp32).
Here the quantized model's weights, already snapped to their low-bit grid, are written into a
float graph and ONNX Runtime's static quantizer places Quantize/DequantizeLinear around every
Conv, Gemm/MatMul and Add, with 8-bit activation ranges calibrated on the given rows; the
runtime fuses those units into QLinearConv / QGemm on AVX512-VNNI or AMX. Low-bit weights are
served as int8 codes (a 4-bit grid re-expressed on an int8 grid: a rounding error of at most
half an int8 step). The price is 8-bit activations everywhere, which the audit of the integer
model measures (accuracy within a few tenths of a point of the fake-quant model here).
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from privquant.artifacts.atomic import atomic_path
from privquant.errors import PrivquantError
from privquant.quant.apply import _set_module, quant_layers
from privquant.quant.onnx_export import export_onnx


def dequantized_copy(model: nn.Module) -> nn.Module:
    """A plain float model whose Conv/Linear weights are the quantized model's grid values."""
    out = copy.deepcopy(model).eval()
    for name, layer in quant_layers(out).items():
        with torch.no_grad():
            w = layer.quantized_weight().detach().clone()
        inner = layer.layer
        with torch.no_grad():
            inner.weight.copy_(w)
        _set_module(out, name, inner)
    return out


def _inline_identity_constants(path: Path) -> None:
    """Replace Identity nodes over initializers (the exporter's way of sharing a constant) by
    initializers: the quantizer fuses a Conv only when its bias is an initializer."""
    import onnx
    from onnx import numpy_helper

    graph_model = onnx.load(str(path))
    graph = graph_model.graph
    inits = {i.name: i for i in graph.initializer}
    keep = []
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in inits:
            array = numpy_helper.to_array(inits[node.input[0]])
            graph.initializer.append(numpy_helper.from_array(array, node.output[0]))
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)
    onnx.save(graph_model, str(path))


class _Calibration:
    """ONNX Runtime's calibration reader over float inputs in [0, 1]."""

    def __init__(self, x: np.ndarray, batch_size: int = 64) -> None:
        xf = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
        self.batches = iter(
            [{"input": xf[i : i + batch_size]} for i in range(0, len(xf), batch_size)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)

    def rewind(self) -> None:  # pragma: no cover (used by some calibrators only)
        raise NotImplementedError


def export_onnx_int8(
    model: nn.Module,
    path: str | os.PathLike[str],
    input_shape: tuple[int, ...],
    calibration: np.ndarray,
    per_channel: bool = True,
) -> Path:
    """Write ``model`` (quantized or float) as an integer ONNX graph for ONNX Runtime.

    ``calibration``: a few hundred representative inputs (uint8 images or float features), e.g.
    the owner's training rows, to fix the 8-bit activation ranges.
    """
    try:
        from onnxruntime.quantization import (
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
    except ImportError as e:
        raise PrivquantError(
            "integer ONNX export needs onnxruntime; pip install 'privquant[onnx]'"
        ) from e
    if len(calibration) == 0:
        raise PrivquantError("calibration: needs at least one input row")
    path = Path(path)
    float_model = dequantized_copy(model)
    with tempfile.TemporaryDirectory() as tmp, atomic_path(path) as out:
        src = Path(tmp) / "float.onnx"
        export_onnx(float_model, src, input_shape)
        _inline_identity_constants(src)
        root = logging.getLogger()
        level = root.level
        root.setLevel(
            logging.ERROR
        )  # the quantizer's advice ("consider pre-processing") is noise here
        try:
            quantize_static(
                str(src), str(out), _Calibration(calibration), quant_format=QuantFormat.QDQ,
                per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
            )  # fmt: skip
        finally:
            root.setLevel(level)
    return path
