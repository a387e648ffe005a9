"""ResNet-20 with GroupNorm and weight-standardized convolutions: the DP-SGD tune's second
normalization probe (De et al. 2022 train their DP WideResNets with GroupNorm + weight
standardization).

dp_sgd swaps BatchNorm for GroupNorm of gcd(32, C) groups (one or two channels each), which cost
about 11 points at 2,555 members before any privacy (docs/results/dp_tune.md). Weight
standardization (Qiao et al. 2019) normalizes each convolution's filters (zero mean, unit variance
over the fan-in) instead of the activations, so it mixes no examples of a batch and per-example
gradients stay exact. This plugin measures whether it recovers BatchNorm's accuracy without
changing the library's model code (whose hash keys the carried size-3 models).

Opacus has no per-example rule for a standardized convolution, and its functorch fallback is slow;
the rule below is the convolution's own (Opacus') followed by the standardization's Jacobian,
applied to each example's gradient: d/dw of (w - mean)/std is
(g - mean(g) - w_hat * mean(g * w_hat)) / std over each filter's fan-in.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from privquant.models import register_model
from privquant.models.layers import group_norm_for
from privquant.models.registry import MODELS

EPS = 1e-5


class WSConv2d(nn.Conv2d):
    """A Conv2d whose filters are standardized over their fan-in on every forward."""

    def standardized(self) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.weight
        mean = w.mean(dim=(1, 2, 3), keepdim=True)
        std = (w.var(dim=(1, 2, 3), unbiased=False, keepdim=True) + EPS).sqrt()
        return (w - mean) / std, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w_hat, _ = self.standardized()
        return F.conv2d(x, w_hat, self.bias, self.stride, self.padding, self.dilation, self.groups)


def _register_opacus_rule() -> None:
    try:
        from opacus.grad_sample import register_grad_sampler
        from opacus.utils.tensor_utils import unfold2d
    except ImportError:  # DP-SGD needs Opacus anyway; plain training does not
        return

    @register_grad_sampler(WSConv2d)
    def _ws_conv_grad_sample(
        layer: WSConv2d, activations: list[torch.Tensor], backprops: torch.Tensor
    ) -> dict[nn.Parameter, torch.Tensor]:
        if layer.groups != 1:
            raise ValueError("resnet20_gnws: per-example rule written for groups=1 convolutions")
        with torch.no_grad():
            w_hat, std = layer.standardized()
            x = activations[0].to(backprops.dtype)
            n = x.shape[0]
            # Each example's gradient with respect to the standardized filters (Opacus' conv
            # rule: unfolded input times output gradient) ...
            cols = unfold2d(x, kernel_size=layer.kernel_size, padding=layer.padding,
                            stride=layer.stride, dilation=layer.dilation)  # fmt: skip
            g = torch.einsum("noq,npq->nop", backprops.reshape(n, layer.out_channels, -1), cols)
            g = g.reshape(n, *layer.weight.shape)
            # ... then through the standardization.
            mean_g = g.mean(dim=(2, 3, 4), keepdim=True)
            mean_gw = (g * w_hat).mean(dim=(2, 3, 4), keepdim=True)
            out = {layer.weight: (g - mean_g - w_hat * mean_gw) / std}
            if layer.bias is not None and layer.bias.requires_grad:
                out[layer.bias] = backprops.reshape(n, layer.out_channels, -1).sum(dim=2)
        return out


_register_opacus_rule()


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
                    f"resnet20_gnws: groups {groups!r} must be 'opacus' or divide {channels} channels"
                )
            setattr(module, name, norm)
        elif type(child) is nn.Conv2d:
            ws = WSConv2d(child.in_channels, child.out_channels, child.kernel_size, child.stride,
                          child.padding, child.dilation, child.groups, child.bias is not None)  # fmt: skip
            ws.load_state_dict(child.state_dict())
            setattr(module, name, ws)
        else:
            _swap(child, groups)


@register_model(
    "resnet20_gnws",
    description="ResNet-20 with GroupNorm(groups) and weight-standardized convolutions",
    replace=True,
)
def resnet20_gnws(
    shape: list[int], num_classes: int, groups: int | str = "opacus", **options: Any
) -> nn.Module:
    net = MODELS["resnet20"].build(shape, num_classes, **options)
    _swap(net, groups)
    return net
