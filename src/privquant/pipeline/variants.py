"""Apply an audit variant (FP32, PTQ, QAT) to one trained model, with caching."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from privquant.artifacts import ArtifactCache, atomic_write_json, load_checkpoint
from privquant.data import Dataset
from privquant.pipeline.config import VariantConfig
from privquant.quant import (
    calibration_batches,
    export_quantized,
    load_quantized,
    quantization_aware_training,
    quantize,
)
from privquant.training import TrainConfig


def fp32_size(model: nn.Module) -> dict[str, Any]:
    n = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    return {"total_bytes": 4 * n, "avg_bits_per_quantized_weight": 32.0, "fp32_bytes": 4 * n}


def make_variant(
    variant: VariantConfig,
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    train: TrainConfig,
    seed: int,
) -> nn.Module:
    """Turn a trained model into ``variant`` using its own training rows (x, y).

    PTQ calibrates on them (what the model's owner has); QAT fine-tunes on them.
    """
    if variant.method == "none":
        return model
    calib = calibration_batches(x, variant.quant.calibration_batches, seed=seed)
    if variant.method == "qat":
        tcfg = train.model_copy(update={"epochs": variant.epochs, "lr": variant.lr, "seed": seed})
        qmodel, _ = quantization_aware_training(
            model, variant.quant, x, y, tcfg, calib, progress=False
        )
        return qmodel
    return quantize(model, variant.quant, calib)


def apply_variant(
    variant: VariantConfig,
    base_checkpoint: Path,
    members: np.ndarray,
    ds: Dataset,
    train: TrainConfig,
    cache: ArtifactCache,
    seed: int,
) -> tuple[nn.Module, dict[str, Any]]:
    """The model an attacker queries under ``variant`` and its size accounting.

    Quantized models are cached as integer exports keyed by the base model and the variant,
    and what is attacked is the model loaded back from those integers.
    """
    if variant.method == "none":
        model, _ = load_checkpoint(base_checkpoint)
        return model, fp32_size(model)
    key = cache.key(
        kind="variant",
        base=base_checkpoint.name,
        variant=variant.model_dump(mode="json"),
        seed=seed,
    )

    def build(folder: Path) -> None:
        model, meta = load_checkpoint(base_checkpoint)
        qmodel = make_variant(variant, model, ds.x_train[members], ds.y_train[members], train, seed)
        qmodel.privquant_spec = meta["model"]
        export_quantized(qmodel, folder)
        atomic_write_json(folder / "variant.json", variant.model_dump(mode="json"))

    folder = cache.get_or_create(key, build)
    model, manifest = load_quantized(folder)
    return model, manifest["size"]


def bits_label(size: dict[str, Any]) -> float:
    bits = size.get("avg_bits_per_quantized_weight", 32.0)
    return float(bits) if math.isfinite(bits) else 32.0
