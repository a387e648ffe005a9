"""Privacy-driven per-layer bit allocation (a transform): spend bits where privacy is cheapest.

For each quantizable layer and candidate width, quantize that layer alone and measure, on data
the defender holds, what it costs (accuracy on the reference rows) and what it buys (how much
the gap between the members' loss and the reference rows' loss shrinks: the signal a loss
attack reads). Then lower widths greedily, best gain per accuracy spent first, until the
average bits per weight meet the budget, and quantize with that map (PTQ, or QAT).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, field_validator
from torch import nn

from privquant.data import seeded_subset
from privquant.defenses.base import DefenseConfig, DefenseContext, register_defense
from privquant.errors import ConfigError
from privquant.models.info import model_info
from privquant.quant import (
    QuantConfig,
    calibration_batches,
    quant_layers,
    quantization_aware_training,
    quantize,
)
from privquant.quant.config import check_bits
from privquant.training import evaluate


class PrivacyBitAllocation(DefenseConfig):
    """Per-layer weight bits chosen for the privacy gained per accuracy spent, under a size budget."""

    method: Literal["privacy_bits"] = "privacy_bits"
    avg_bits: float = Field(
        4.0, ge=1.58, le=8, description="budget: mean bits per quantized weight"
    )
    candidates: list[float] = Field(
        default_factory=lambda: [8, 4, 3, 2], description="allowed widths"
    )
    quant: QuantConfig = Field(
        default_factory=QuantConfig,
        description="granularity, calibration, ...; widths are set here",
    )
    then: Literal["ptq", "qat"] = Field(
        "ptq", description="quantize the chosen map with PTQ or QAT"
    )
    epochs: int = Field(2, ge=1, description="qat: fine-tuning epochs")
    lr: float = Field(0.001, gt=0, description="qat: learning rate")
    eval_rows: int = Field(
        2000,
        ge=100,
        description="members and reference rows per measurement (each candidate width of each "
        "layer is one measurement: the cost knob on deep nets)",
    )

    @field_validator("candidates")
    @classmethod
    def _widths(cls, v: list[float]) -> list[float]:
        for b in v:
            check_bits(b, "candidates")
        return sorted(set(v), reverse=True)

    def check(self) -> None:
        if self.candidates and self.avg_bits < min(self.candidates):
            raise ValueError(f"avg_bits {self.avg_bits:g} is below every candidate width {self.candidates}: "
                             "no bit map meets the budget")  # fmt: skip

    def reference_rows_needed(self) -> int:
        return 1


MeasurementRows = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def measurement_rows(ctx: DefenseContext, rows: int) -> MeasurementRows:
    """(members x, y, reference x, y): ``rows`` of each, class-unbiased subsets (seeded members,
    the context's reference order), drawn once per allocation."""
    members = seeded_subset(len(ctx.x), rows, ctx.seed)
    xr, yr = ctx.reference_rows(min(rows, len(ctx.x_reference)), "privacy_bits")
    return ctx.x[members], ctx.y[members], xr, yr


def _measure(model: nn.Module, rows: MeasurementRows) -> tuple[float, float]:
    """(accuracy on reference rows, reference loss - member loss)."""
    xm, ym, xr, yr = rows
    ref = evaluate(model, xr, yr)
    return ref["accuracy"], ref["loss"] - evaluate(model, xm, ym)["loss"]


def allocate_bits(
    config: PrivacyBitAllocation, model: nn.Module, ctx: DefenseContext
) -> dict[str, float]:
    """The per-layer width map: greedy on measured (gap reduction + eps) / (accuracy drop + eps)."""
    if ctx.x_reference is None or len(ctx.x_reference) == 0:
        raise ConfigError("privacy_bits needs defender reference rows (data.reference_size > 0)")
    calib = calibration_batches(ctx.x, config.quant.calibration_batches, seed=ctx.seed)
    top = config.candidates[0]
    base_cfg = config.quant.model_copy(
        update={"weight_bits": top, "first_last_bits": None, "layer_bits": {}}
    )
    layers = {
        n: q.layer.weight.numel() for n, q in quant_layers(quantize(model, base_cfg, calib)).items()
    }
    rows = measurement_rows(ctx, config.eval_rows)
    acc0, gap0 = _measure(quantize(model, base_cfg, calib), rows)
    effect: dict[tuple[str, float], tuple[float, float]] = {}
    for name in layers:
        effect[(name, top)] = (0.0, 0.0)
        for b in config.candidates[1:]:
            acc, gap = _measure(
                quantize(model, base_cfg.model_copy(update={"layer_bits": {name: b}}), calib), rows
            )
            effect[(name, b)] = (max(0.0, acc0 - acc), gap0 - gap)  # (cost, gain)
    bits = dict.fromkeys(layers, top)
    total = sum(layers.values())

    def average() -> float:
        return sum(bits[n] * w for n, w in layers.items()) / total

    while average() > config.avg_bits + 1e-9:
        moves = []
        for name, b in bits.items():
            lower = [c for c in config.candidates if c < b]
            if not lower:
                continue
            nb = lower[0]
            cost = effect[(name, nb)][0] - effect[(name, b)][0]
            gain = effect[(name, nb)][1] - effect[(name, b)][1]
            saved = (b - nb) * layers[name]
            moves.append(((max(gain, 0.0) + 1e-3) / (max(cost, 0.0) + 1e-3), saved, name, nb))
        if not moves:
            raise ConfigError(
                f"avg_bits: {config.avg_bits} is below what candidates {config.candidates} reach"
            )
        _, _, name, nb = max(moves)
        bits[name] = nb
    return bits


@register_defense(PrivacyBitAllocation, "transform")
def _privacy_bits(config: PrivacyBitAllocation, model: nn.Module, ctx: DefenseContext) -> nn.Module:
    bits = allocate_bits(config, model, ctx)
    quant = config.quant.model_copy(update={"weight_bits": max(bits.values()), "first_last_bits": None,
                                            "layer_bits": bits})  # fmt: skip
    calib = calibration_batches(ctx.x, quant.calibration_batches, seed=ctx.seed)
    if config.then == "ptq":
        qmodel = quantize(model, quant, calib)
    else:
        train = ctx.train.model_copy(
            update={"epochs": config.epochs, "lr": config.lr, "seed": ctx.seed}
        )
        qmodel, _ = quantization_aware_training(
            model, quant, ctx.x, ctx.y, train, calib, progress=False
        )
    model_info(qmodel).bit_allocation = bits
    return qmodel
