"""Small building blocks shared by the models."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


class Normalize(nn.Module):
    """Per-channel (or per-feature) standardization inside the model.

    Keeping it in the model makes a checkpoint, an attack query and an exported ONNX graph all
    take the same raw [0, 1] input.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], image: bool) -> None:
        super().__init__()
        shape = (1, -1, 1, 1) if image else (1, -1)
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(shape))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def group_norm_for(channels: int, affine: bool = True) -> nn.GroupNorm:
    """The GroupNorm that replaces a BatchNorm of ``channels`` (Opacus' rule: gcd(32, C) groups)."""
    return nn.GroupNorm(math.gcd(32, channels), channels, affine=affine)


def batchnorm_to_groupnorm(model: nn.Module) -> int:
    """Replace every BatchNorm in ``model`` (in place) by GroupNorm; return how many.

    Per-example gradients (DP-SGD) are undefined under BatchNorm, which mixes the examples of a
    batch. A checkpoint records the conversion in its spec (``norm: group``), so loading
    rebuilds the same layers.
    """
    count = 0
    for name, child in list(model.named_children()):
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(model, name, group_norm_for(child.num_features, child.affine))
            count += 1
        else:
            count += batchnorm_to_groupnorm(child)
    return count
