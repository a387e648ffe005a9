"""Apply a :class:`QuantConfig` to any model: fold BatchNorm, wrap layers, calibrate."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from privquant.errors import ConfigError
from privquant.models.info import model_info
from privquant.quant.config import QuantConfig
from privquant.quant.fake import act_params, fake_quant, weight_params
from privquant.quant.modules import QuantLayer

QUANTIZABLE = (nn.Conv2d, nn.Linear)
# Modules with parameters that need no quantization of their own.
_PASSIVE = (nn.BatchNorm1d, nn.BatchNorm2d, nn.Identity)


def fold_batchnorm(model: nn.Module) -> tuple[nn.Module, bool]:
    """Fold every BatchNorm that directly follows a Conv2d into it (eval-mode statistics).

    Quantization then applies to exactly the weights a deployed integer model uses. Returns the
    folded model and whether folding succeeded; a model torch.fx cannot trace keeps its
    BatchNorm layers in float (frozen), with a warning.
    """
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if not has_bn:
        return model, True
    from torch.fx.experimental.optimization import fuse

    try:
        folded = fuse(model.eval(), inplace=False)
    except Exception as e:  # untraceable user model
        warnings.warn(
            f"BatchNorm not folded (model not traceable: {e}); it stays in float, frozen",
            stacklevel=2,
        )
        return model, False
    model_info(folded).spec = model_info(model).spec  # fx rebuilds the module
    return folded, True


def layer_bits_map(model: nn.Module, config: QuantConfig) -> dict[str, float]:
    """Weight bits per quantizable layer: explicit map > first/last default > global width."""
    names = [n for n, m in model.named_modules() if isinstance(m, QUANTIZABLE)]
    if not names:
        raise ConfigError("model has no Conv2d or Linear layer to quantize")
    unknown = sorted(set(config.layer_bits) - set(names))
    if unknown:
        raise ConfigError(f"layer_bits: unknown layers {unknown}; quantizable layers are {names}")
    bits = {n: config.weight_bits for n in names}
    if config.first_last_bits is not None:
        for n in (names[0], names[-1]):
            bits[n] = max(config.first_last_bits, config.weight_bits)
    bits.update(config.layer_bits)
    return bits


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _warn_skipped(model: nn.Module) -> list[str]:
    skipped = []
    for name, m in model.named_modules():
        own = list(m.parameters(recurse=False))
        if own and not isinstance(m, (*QUANTIZABLE, *_PASSIVE, QuantLayer)):
            skipped.append(f"{name} ({type(m).__name__})")
    if skipped:
        warnings.warn(
            f"not quantized (unsupported layer types, kept in float): {skipped}", stacklevel=3
        )
    return skipped


def quant_layer(
    layer: nn.Conv2d | nn.Linear,
    bits: float,
    config: QuantConfig,
    direction: torch.Tensor | None = None,
) -> QuantLayer:
    """``layer`` wrapped with a grid calibrated on its weights (times a per-channel ``direction``
    of ±1, where the weights will be quantized in that direction)."""
    weight = layer.weight if direction is None else layer.weight * direction
    scale, zero = weight_params(weight, bits, config.symmetric, config.granularity == "per_channel",
                                config.calibration, config.percentile)  # fmt: skip
    return QuantLayer(layer, bits, config.symmetric, scale, zero, config.act_bits, config.learn_scale)  # fmt: skip


def quantize(
    model: nn.Module, config: QuantConfig, calibration_data: Iterable[torch.Tensor] | None = None
) -> nn.Module:
    """A fake-quantized copy of ``model`` following ``config`` (the original is untouched).

    ``calibration_data`` (float input batches) is needed for activation ranges and AdaRound.
    """
    if (config.act_bits or config.rounding == "adaround") and calibration_data is None:
        raise ConfigError("calibration data is required for act_bits or rounding='adaround'")
    # Contiguous layout: conv kernels differ by memory format, and an export must reproduce
    # this model's outputs bit for bit.
    qmodel = copy.deepcopy(model).eval().to(memory_format=torch.contiguous_format)
    qmodel, folded = fold_batchnorm(qmodel)
    fp_folded = copy.deepcopy(qmodel) if config.rounding == "adaround" else None
    bits = layer_bits_map(qmodel, config)
    for name, b in bits.items():
        _set_module(qmodel, name, quant_layer(qmodel.get_submodule(name), b, config))
    skipped = _warn_skipped(qmodel)
    batches = (
        list(calibration_data)[: config.calibration_batches] if calibration_data is not None else []
    )
    if config.act_bits:
        calibrate_activations(qmodel, batches, config)
    if config.rounding == "adaround":
        from privquant.quant.adaround import adaround

        adaround(qmodel, model_fp=fp_folded, batches=batches)
    model_info(qmodel).quant = {
        "config": config.model_dump(mode="json"),
        "layer_bits": bits,
        "bn_folded": folded,
        "skipped": skipped,
    }
    return qmodel.eval()


def quant_layers(model: nn.Module) -> dict[str, QuantLayer]:
    return {n: m for n, m in model.named_modules() if isinstance(m, QuantLayer)}


@torch.no_grad()
def calibrate_activations(
    model: nn.Module, batches: list[torch.Tensor], config: QuantConfig
) -> None:
    """Observe each quantized layer's input over ``batches`` and fix its activation grid.

    Layers are calibrated in order with earlier layers already quantizing their inputs, so each
    range reflects what the deployed model will see.
    """
    layers = quant_layers(model)
    for layer in layers.values():
        samples: list[torch.Tensor] = []
        hook = layer.register_forward_pre_hook(
            lambda m, inp, s=samples: s.append(inp[0].detach().flatten())
        )
        for xb in batches:
            model(xb)
        hook.remove()
        values = torch.cat(samples)
        lo, hi = _act_range(values, config)
        layer.act_scale.copy_(act_params(lo, hi, config.act_bits)[0])
        layer.act_zero.copy_(act_params(lo, hi, config.act_bits)[1])
        layer.act_enabled = True


def _act_range(values: torch.Tensor, config: QuantConfig) -> tuple[float, float]:
    if len(values) > 200_000:  # a fixed subsample keeps calibration cheap and deterministic
        values = values[torch.linspace(0, len(values) - 1, 200_000).long()]
    lo, hi = float(values.min()), float(values.max())
    if config.calibration == "percentile":
        p = config.percentile / 100
        lo = float(torch.quantile(values, 1 - p)) if lo < 0 else lo
        hi = float(torch.quantile(values, p))
    elif config.calibration == "mse":
        best = (float("inf"), lo, hi)
        for r in np.linspace(1.0, 0.3, 36):
            s, z = act_params(lo * r, hi * r, config.act_bits)
            err = float(
                ((fake_quant(values, s, z, 0, 2**config.act_bits - 1) - values) ** 2).mean()
            )
            if err < best[0]:
                best = (err, lo * r, hi * r)
        lo, hi = best[1], best[2]
    return lo, hi
