"""Output-stage methods: what the deployed model releases instead of its raw logits."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from privquant.defenses.base import DefenseConfig, DefenseContext, register_defense
from privquant.defenses.serving import register_restorer


class OutputCoarsening(DefenseConfig):
    """Release coarse posteriors: top-k classes, probabilities rounded to 1/levels, argmax kept."""

    method: Literal["output_coarsening"] = "output_coarsening"
    levels: int = Field(
        10, ge=1, le=1_000_000, description="probabilities are rounded to multiples of 1/levels"
    )
    top_k: int | None = Field(None, ge=1, description="release only the k largest (None: all)")
    mode: Literal["round", "label_template"] = Field(
        "round",
        description="round: coarse probabilities; label_template: HAMP-style, every input gets the "
        "same low-confidence posterior around its predicted class (only the label is released)",
    )
    template_confidence: float = Field(
        0.5, gt=0, lt=1, description="label_template: probability given to the predicted class"
    )


class CoarsePosterior(nn.Module):
    """Wraps a model; returns log of its rounded posterior (finite, same predicted class).

    Rounding can tie the top classes; a tiny bonus on the original argmax keeps the predicted
    label, so label-only behaviour and accuracy are unchanged.
    """

    FLOOR = 1e-12  # log(0) would break every downstream statistic; this is far below 1/levels

    def __init__(
        self,
        model: nn.Module,
        levels: int,
        top_k: int | None,
        template_confidence: float | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.levels = levels
        self.top_k = top_k
        self.template_confidence = template_confidence

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x).float()
        p = logits.softmax(-1)
        top = p.argmax(-1, keepdim=True)
        if self.template_confidence is not None:  # the same posterior for every input but its label
            c, k = self.template_confidence, p.shape[-1]
            rest = (1 - c) / max(1, k - 1)
            q = torch.full_like(p, rest).scatter(-1, top, max(c, rest + 1e-6))
            return q.log()
        if self.top_k is not None and self.top_k < p.shape[-1]:
            kth = p.topk(self.top_k, dim=-1).values[..., -1:]
            p = torch.where(p >= kth, p, torch.zeros_like(p))
        q = torch.round(p * self.levels) / self.levels
        q = q.scatter_add(-1, top, torch.full_like(top, 1e-6, dtype=q.dtype))
        return q.clamp_min(self.FLOOR).log()


@register_defense(OutputCoarsening, "output")
def _output_coarsening(
    config: OutputCoarsening, model: nn.Module, ctx: DefenseContext
) -> nn.Module:
    template = config.template_confidence if config.mode == "label_template" else None
    return CoarsePosterior(model, config.levels, config.top_k, template).eval()


@register_restorer("output_coarsening")
def _restore_coarsening(
    config: dict, model: nn.Module, tensors: dict[str, torch.Tensor]
) -> nn.Module:
    c = OutputCoarsening.model_validate(config)
    template = c.template_confidence if c.mode == "label_template" else None
    return CoarsePosterior(model, c.levels, c.top_k, template)
