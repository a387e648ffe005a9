"""Privacy Meter 2's CIFAR-10 CNN (62,006 parameters), written as a privquant user model.

The same layers as PM2's ``models/cnn.py`` (a LeNet-5 variant): conv 3->6 (5x5), max-pool,
conv 6->16 (5x5), max-pool, then 400 -> 120 -> 84 -> classes. Loaded by the config next to
this file through ``plugins:``, which shows how any user model reaches a YAML audit.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from privquant.models import register_model


@register_model("pm2_cnn", description="Privacy Meter 2's CIFAR-10 CNN (62k parameters)")
def pm2_cnn(shape: list[int], num_classes: int, **options: Any) -> nn.Module:
    c, h, w = shape
    if (h, w) != (32, 32):
        raise ValueError(f"pm2_cnn: needs 32x32 images, got {h}x{w}")
    return nn.Sequential(
        nn.Conv2d(c, 6, 5), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, num_classes),
    )  # fmt: skip
