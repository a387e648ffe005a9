"""The small CNN used by Shokri et al. / ML-Leaks style MIA studies."""

from __future__ import annotations

from torch import nn


def small_cnn(
    in_channels: int, num_classes: int, image_size: int = 32, width: int = 32
) -> nn.Sequential:
    """Two conv-pool blocks and a 128-unit hidden layer (about 0.55M parameters at 32x32x3)."""
    feat = image_size // 4
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * width * feat * feat, 128),
        nn.ReLU(inplace=True),
        nn.Linear(128, num_classes),
    )
