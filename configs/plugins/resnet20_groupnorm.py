"""ResNet-20 with GroupNorm of a chosen group count in place of BatchNorm: the DP-SGD tune's probe
of whether the normalization, not the noise, limits DP-SGD's accuracy.

dp_sgd converts BatchNorm with Opacus' rule, gcd(32, C) groups, which on ResNet-20's 16/32/64
channels is 16/32/32 groups: one or two channels per group, close to InstanceNorm. A model built
with GroupNorm already passes through dp_sgd unchanged, so this plugin lets a tune config compare
other group counts (``model: {name: resnet20_gn, options: {groups: 4}}``) without touching the
library's model code.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from privquant.models import register_model
from privquant.models.registry import MODELS


def _swap(module: nn.Module, groups: int) -> None:
    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm2d):
            if child.num_features % groups:
                raise ValueError(
                    f"resnet20_gn: groups {groups} does not divide {child.num_features} channels"
                )
            setattr(module, name, nn.GroupNorm(groups, child.num_features, affine=child.affine))
        else:
            _swap(child, groups)


@register_model(
    "resnet20_gn",
    description="ResNet-20 with GroupNorm(groups) in place of BatchNorm",
    replace=True,
)
def resnet20_gn(shape: list[int], num_classes: int, groups: int = 4, **options: Any) -> nn.Module:
    net = MODELS["resnet20"].build(shape, num_classes, **options)
    _swap(net, groups)
    return net
