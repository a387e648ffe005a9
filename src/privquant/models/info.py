"""What privquant records about a model beyond its weights, in one typed place.

Checkpoints, exports and results read these fields (how to rebuild the architecture, the
quantization applied, what a defense measured); handlers write them. They live on the module
(copied with it by ``copy.deepcopy``), under one attribute, instead of as loose attributes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

ATTRIBUTE = "_privquant_info"


@dataclass
class ModelInfo:
    spec: dict[str, Any] | None = None  # registry name + kwargs: rebuilds the architecture
    quant: dict[str, Any] | None = None  # the quantization applied: config, bits per layer
    defense_info: dict[str, float] | None = None  # what a defense measured or chose
    bit_allocation: dict[str, float] | None = None  # privacy_bits: bits chosen per layer
    batchnorm_pairs: dict[str, str] | None = None  # BatchNorm-live QAT: conv -> its BatchNorm


def model_info(model: nn.Module) -> ModelInfo:
    """The record of ``model`` (an empty one is attached on first use)."""
    info = model.__dict__.get(ATTRIBUTE)
    if not isinstance(info, ModelInfo):
        info = ModelInfo()
        model.__dict__[ATTRIBUTE] = info
    return info
