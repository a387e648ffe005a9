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


class RelaxLoss(Objective):
    """RelaxLoss (Chen et al., ICLR 2022): stop descending once the batch loss is below ``alpha``.

    Above ``alpha``: plain cross-entropy. Below it, alternating steps either ascend the loss or
    flatten the posterior (the true class keeps its probability, the others share the rest
    equally, learned on correctly classified rows), so members' losses hover at the level
    non-members get instead of collapsing toward zero.
    """

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha
        self.step = 0

    def __call__(
        self,
        logits: torch.Tensor,
        targets: torch.Tensor,
        *,
        model: nn.Module,
        indices: torch.Tensor,
    ) -> torch.Tensor:
        logits = logits.float()
        ce = F.cross_entropy(logits, targets)
        self.step += 1
        if ce.item() >= self.alpha:
            return ce
        if self.step % 2:
            return -ce  # gradient ascent
        log_p = F.log_softmax(logits, dim=-1)
        with torch.no_grad():
            p_true = log_p.exp().gather(1, targets[:, None])
            flat = ((1 - p_true) / (logits.shape[1] - 1)).expand_as(log_p).clone()
            flat.scatter_(1, targets[:, None], p_true)
            correct = (logits.argmax(1) == targets).float()
        per_row = -(flat * log_p).sum(-1)
        return (per_row * correct).sum() / correct.sum().clamp_min(1.0)


def high_entropy_label_confidence(num_classes: int, entropy_fraction: float) -> float:
    """The true-class probability p whose label (p, rest shared equally) has entropy
    ``entropy_fraction * log(num_classes)`` (HAMP's soft labels); found by bisection."""
    import math

    k = num_classes
    target = entropy_fraction * math.log(k)

    def entropy(p: float) -> float:
        q = (1 - p) / (k - 1)
        return -(p * math.log(p) + (k - 1) * (q * math.log(q) if q > 0 else 0.0))

    lo, hi = 1.0 / k, 1.0 - 1e-12  # entropy falls from log(k) to 0 on this interval
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if entropy(mid) > target else (lo, mid)
    return (lo + hi) / 2


class HighEntropyLabels(Objective):
    """HAMP's training objective (Chen & Pattabiraman, NDSS 2024): cross-entropy against soft
    labels of high entropy, minus ``alpha`` times the entropy of the prediction, so the model
    is never pushed toward the overconfident outputs that give members away."""

    def __init__(self, num_classes: int, entropy_fraction: float, alpha: float) -> None:
        self.num_classes = num_classes
        self.p_true = high_entropy_label_confidence(num_classes, entropy_fraction)
        self.alpha = alpha

    def __call__(
        self,
        logits: torch.Tensor,
        targets: torch.Tensor,
        *,
        model: nn.Module,
        indices: torch.Tensor,
    ) -> torch.Tensor:
        log_p = F.log_softmax(logits.float(), dim=-1)
        rest = (1 - self.p_true) / (self.num_classes - 1)
        soft = torch.full_like(log_p, rest).scatter(1, targets[:, None], self.p_true)
        ce = -(soft * log_p).sum(-1).mean()
        entropy = -(log_p.exp() * log_p).sum(-1).mean()
        return ce - self.alpha * entropy
