"""Build a model by name from the data's shape; the result is always Normalize -> network."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from privquant.errors import ConfigError
from privquant.models.cnn import small_cnn
from privquant.models.layers import Normalize
from privquant.models.mlp import mlp
from privquant.models.resnet import resnet18, resnet20

MODEL_NAMES = ("mlp", "small_cnn", "resnet20", "resnet18")


def build_model(
    name: str,
    input_shape: Sequence[int],
    num_classes: int,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    **options: Any,
) -> nn.Sequential:
    """A model for inputs of ``input_shape`` ([C, H, W] images or [F] features).

    ``mean``/``std`` (per channel or per feature) are folded into a leading :class:`Normalize`
    layer; defaults are 0 and 1. ``options`` go to the network constructor (e.g. ``hidden`` for
    the MLP, ``width`` for the small CNN).
    """
    shape = [int(d) for d in input_shape]
    image = len(shape) == 3
    if name not in MODEL_NAMES:
        raise ConfigError(f"model: unknown name {name!r}; choose one of {list(MODEL_NAMES)}")
    if name == "mlp":
        in_features = 1
        for d in shape:
            in_features *= d
        net: nn.Module = (
            nn.Sequential(nn.Flatten(), mlp(in_features, num_classes, **options))
            if image
            else mlp(in_features, num_classes, **options)
        )
    else:
        if not image:
            raise ConfigError(
                f"model: {name} needs image input [C, H, W], got shape {shape}; use 'mlp'"
            )
        c, h, w = shape
        if name == "small_cnn":
            if h != w or h % 4:
                raise ConfigError(
                    f"model: small_cnn needs square inputs with side divisible by 4, got {h}x{w}"
                )
            net = small_cnn(c, num_classes, image_size=h, **options)
        else:
            net = {"resnet20": resnet20, "resnet18": resnet18}[name](c, num_classes, **options)
    n_norm = shape[0]  # channels for images, features for tables
    mean = list(mean) if mean is not None else [0.0] * n_norm
    std = list(std) if std is not None else [1.0] * n_norm
    model = nn.Sequential(Normalize(mean, std, image=image), net)
    # Recorded so a checkpoint can rebuild the exact architecture from JSON alone.
    model.privquant_spec = {  # type: ignore[attr-defined]
        "name": name,
        "kwargs": {
            "input_shape": shape,
            "num_classes": int(num_classes),
            "mean": mean,
            "std": std,
            **options,
        },
    }
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
