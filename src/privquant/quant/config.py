"""A quantization method is a small config object; :func:`privquant.quant.quantize` applies it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from privquant.errors import ConfigError

TERNARY = 1.58
ALLOWED_BITS = (TERNARY, 2, 3, 4, 5, 6, 7, 8)


def check_bits(bits: float, where: str) -> float:
    if bits not in ALLOWED_BITS:
        raise ConfigError(
            f"{where}: {bits} bits is not supported; choose one of {list(ALLOWED_BITS)} (1.58 = ternary)"
        )
    return bits


class QuantConfig(BaseModel):
    """How to quantize a model.

    Weights of every Conv2d/Linear are fake-quantized; activations (the inputs of those layers)
    too when ``act_bits`` is set. ``layer_bits`` maps layer names (as in ``named_modules``) to a
    weight bit width (mixed precision); ``first_last_bits`` keeps the first and last layer at a
    higher width by default, since they are the most sensitive (set it to None to disable).
    """

    model_config = ConfigDict(extra="forbid")

    weight_bits: float = Field(8, description="1.58 (ternary), 2..8")
    act_bits: int | None = Field(
        None, description="None: weights only; else 2..8 (unsigned, per tensor)"
    )
    granularity: Literal["per_channel", "per_tensor"] = "per_channel"
    symmetric: bool = Field(True, description="weights: symmetric (zero point 0) or asymmetric")
    calibration: Literal["minmax", "percentile", "mse"] = "mse"
    percentile: float = Field(99.99, gt=50, le=100, description="for calibration='percentile'")
    rounding: Literal["nearest", "adaround"] = "nearest"
    learn_scale: bool = Field(
        False, description="QAT: learned step size (LSQ) instead of fixed scales + STE"
    )
    layer_bits: dict[str, float] = Field(default_factory=dict)
    first_last_bits: float | None = 8
    calibration_batches: int = Field(8, ge=1)

    @field_validator("weight_bits", "first_last_bits")
    @classmethod
    def _bits(cls, v: float | None) -> float | None:
        return None if v is None else check_bits(v, "weight_bits")

    @field_validator("act_bits")
    @classmethod
    def _act(cls, v: int | None) -> int | None:
        if v is not None and not 2 <= v <= 8:
            raise ConfigError(f"act_bits: {v} is not supported; choose 2..8 or None")
        return v

    @field_validator("layer_bits")
    @classmethod
    def _layer_bits(cls, v: dict[str, float]) -> dict[str, float]:
        for name, bits in v.items():
            check_bits(bits, f"layer_bits[{name!r}]")
        return v
