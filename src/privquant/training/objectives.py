"""What training minimizes. The extension point for privacy objectives and regularizers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Objective:
    """Loss of one batch. Subclass and override :meth:`__call__` to change the objective.

    ``indices`` are the batch's row numbers in the training arrays, so an objective can keep
    per-example state (e.g. a loss floor per point).
    """

    def __call__(
        self,
        logits: torch.Tensor,
        targets: torch.Tensor,
        *,
        model: nn.Module,
        indices: torch.Tensor,
    ) -> torch.Tensor:
        raise NotImplementedError


class CrossEntropy(Objective):
    """Cross-entropy, optionally with label smoothing (itself a known, weak MIA defense)."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        self.label_smoothing = label_smoothing

    def __call__(
        self,
        logits: torch.Tensor,
        targets: torch.Tensor,
        *,
        model: nn.Module,
        indices: torch.Tensor,
    ) -> torch.Tensor:
        return F.cross_entropy(logits.float(), targets, label_smoothing=self.label_smoothing)


class SoftTargetCrossEntropy(Objective):
    """Cross-entropy against a given probability vector per training row (distillation).

    ``targets`` is [rows, classes] in the order of the training arrays; the trainer passes each
    batch's row ``indices``, so augmentation and shuffling need no special handling.
    """

    def __init__(self, targets: torch.Tensor) -> None:
        self.targets = targets.float()

    def __call__(
        self,
        logits: torch.Tensor,
        targets: torch.Tensor,
        *,
        model: nn.Module,
        indices: torch.Tensor,
    ) -> torch.Tensor:
        soft = self.targets.to(logits.device)[indices]
        return -(soft * F.log_softmax(logits.float(), dim=-1)).sum(-1).mean()
