"""ResNet-20 with GroupNorm of a chosen group count in place of BatchNorm: the DP-SGD tune's probe
of whether the normalization, not the noise, limits DP-SGD's accuracy.

dp_sgd converts BatchNorm with Opacus' rule, gcd(32, C) groups, which on ResNet-20's 16/32/64
channels is 16/32/32 groups: one or two channels per group, close to InstanceNorm. A model built
with GroupNorm already passes through dp_sgd unchanged, so this plugin lets a tune config compare
other group counts (``model: {name: resnet20_gn, options: {groups: 4}}``) without touching the
library's model code. ``groups: opacus`` builds dp_sgd's own conversion (gcd(32, C) groups), so
its "no defense" point is what that normalization costs without DP.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from privquant.models import register_model
from privquant.models.layers import group_norm_for
from privquant.models.registry import MODELS


def _swap(module: nn.Module, groups: int | str) -> None:
    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm2d):
            channels = child.num_features
            if groups == "opacus":
                norm = group_norm_for(channels, child.affine)
            elif isinstance(groups, int) and groups > 0 and channels % groups == 0:
                norm = nn.GroupNorm(groups, channels, affine=child.affine)
            else:
                raise ValueError(
                    f"resnet20_gn: groups {groups!r} must be 'opacus' or divide {channels} channels"
                )
            setattr(module, name, norm)
        else:
            _swap(child, groups)


@register_model(
    "resnet20_gn",
    description="ResNet-20 with GroupNorm(groups) in place of BatchNorm",
    replace=True,
)
def resnet20_gn(
    shape: list[int], num_classes: int, groups: int | str = 4, **options: Any
) -> nn.Module:
    net = MODELS["resnet20"].build(shape, num_classes, **options)
    _swap(net, groups)
    return net
