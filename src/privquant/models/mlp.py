"""Multi-layer perceptron for tabular data (the Purchase/Texas-style MIA benchmark model)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


def mlp(
    in_features: int, num_classes: int, hidden: Sequence[int] = (1024, 512, 256, 128)
) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.Tanh()]
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)
