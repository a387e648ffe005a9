"""Quantization: fake-quant, PTQ calibration, AdaRound, QAT, integer export."""

from privquant.quant.apply import fold_batchnorm, quant_layers, quantize
from privquant.quant.config import ALLOWED_BITS, TERNARY, QuantConfig
from privquant.quant.export import export_quantized, load_quantized
from privquant.quant.modules import QuantLayer
from privquant.quant.qat import calibration_batches, quantization_aware_training

__all__ = [
    "ALLOWED_BITS",
    "TERNARY",
    "QuantConfig",
    "QuantLayer",
    "calibration_batches",
    "export_quantized",
    "fold_batchnorm",
    "load_quantized",
    "quant_layers",
    "quantization_aware_training",
    "quantize",
]
