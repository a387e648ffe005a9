"""Named recipes: defense steps chosen by measurement (docs/results/defense.md says why)."""

from __future__ import annotations

from typing import Any


def default_recipe(bits: float = 4) -> list[dict[str, Any]]:
    """The default MIA-defense quantization at ``bits`` weight bits.

    Split self-distillation with 4 sub-teachers (each member labelled only by the teacher that
    never saw it), then quantization-aware fine-tuning of the fresh student on its own soft
    outputs, so no hard member label enters at any step. Costs about 4x plain training.
    """
    return [
        {"method": "split_distill", "teachers": 4},
        {"method": "qat", "quant": {"weight_bits": bits}, "targets": "self", "epochs": 2},
    ]
