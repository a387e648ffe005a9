"""Small building blocks shared by the models."""

from __future__ import annotations

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
