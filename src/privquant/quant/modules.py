"""The fake-quantized layer that wraps a Conv2d or Linear."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from privquant.quant.fake import fake_quant, level_range


class QuantLayer(nn.Module):
    """A Conv2d/Linear whose weights (and optionally input activations) are fake-quantized.

    ``scale``/``zero`` broadcast against the weight (per output channel or per tensor). With
    ``lsq`` the scale is a trainable parameter (learned step size); otherwise a buffer and the
    weights train through a straight-through estimator. ``alpha`` holds AdaRound's soft
    rounding variables while they are being optimized.
    """

    def __init__(
        self,
        layer: nn.Conv2d | nn.Linear,
        bits: float,
        symmetric: bool,
        scale: torch.Tensor,
        zero: torch.Tensor,
        act_bits: int | None = None,
        lsq: bool = False,
    ) -> None:
        super().__init__()
        self.layer = layer
        self.bits = float(bits)
        self.symmetric = symmetric
        self.qmin, self.qmax = level_range(bits, symmetric)
        self.lsq = lsq
        if lsq:
            self.scale = nn.Parameter(scale.clone())
        else:
            self.register_buffer("scale", scale.clone())
        self.register_buffer("zero", zero.clone())
        self.act_bits = act_bits
        self.register_buffer("act_scale", torch.tensor(1.0))
        self.register_buffer("act_zero", torch.tensor(0.0))
        self.act_enabled = False  # switched on once activation ranges are calibrated
        self.alpha: nn.Parameter | None = None
        # Set by an exporter while it traces (the layer does not know its exporters): a forward
        # in ops the target format can express, e.g. ONNX QDQ.
        self.export_forward: Callable[[QuantLayer, torch.Tensor], torch.Tensor] | None = None

    @property
    def per_channel(self) -> bool:
        return self.scale.dim() > 0

    def quantized_weight(self) -> torch.Tensor:
        w = self.layer.weight
        if self.alpha is not None:  # AdaRound: learned up/down rounding, no STE needed
            h = torch.clamp(torch.sigmoid(self.alpha) * 1.2 - 0.1, 0, 1)
            q = torch.clamp(torch.floor(w / self.scale) + h + self.zero, self.qmin, self.qmax)
            return (q - self.zero) * self.scale
        return fake_quant(w, self.scale, self.zero, self.qmin, self.qmax, lsq=self.lsq)

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.act_bits and self.act_enabled):
            return x
        qmax = 2**self.act_bits - 1
        return fake_quant(x, self.act_scale, self.act_zero, 0, qmax)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.export_forward is not None:
            return self.export_forward(self, x)
        x = self.quantize_input(x)
        w = self.quantized_weight()
        bias = self.layer.bias
        if isinstance(self.layer, nn.Conv2d):
            return self.layer._conv_forward(x, w, bias)
        return F.linear(x, w, bias)

    def extra_repr(self) -> str:
        act = f", act_bits={self.act_bits}" if self.act_bits else ""
        gran = "per_channel" if self.per_channel else "per_tensor"
        return f"bits={self.bits:g}, {'symmetric' if self.symmetric else 'asymmetric'}, {gran}{act}, lsq={self.lsq}"
