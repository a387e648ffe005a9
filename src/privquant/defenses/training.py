"""Train-stage methods: change how every model of the population is trained."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import nn

from privquant.defenses.base import DefenseConfig, DefenseContext, register_defense


class LabelSmoothing(DefenseConfig):
    """Train with label smoothing (a known, weak membership-inference defense)."""

    method: Literal["label_smoothing"] = "label_smoothing"
    smoothing: float = Field(0.1, gt=0, lt=1, description="mass spread over the other classes")


@register_defense(LabelSmoothing, "train")
def _label_smoothing(config: LabelSmoothing, ctx: DefenseContext) -> nn.Module:
    return ctx.train_fresh(train=ctx.train.model_copy(update={"label_smoothing": config.smoothing}))
