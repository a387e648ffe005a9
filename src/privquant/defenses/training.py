"""Train-stage methods: change how every model of the population is trained."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field
from torch import nn

from privquant.defenses.base import DefenseConfig, DefenseContext, register_defense
from privquant.errors import ConfigError
from privquant.training import RelaxLoss


class LabelSmoothing(DefenseConfig):
    """Train with label smoothing (a known, weak membership-inference defense)."""

    method: Literal["label_smoothing"] = "label_smoothing"
    smoothing: float = Field(0.1, gt=0, lt=1, description="mass spread over the other classes")


@register_defense(LabelSmoothing, "train")
def _label_smoothing(config: LabelSmoothing, ctx: DefenseContext) -> nn.Module:
    return ctx.train_fresh(train=ctx.train.model_copy(update={"label_smoothing": config.smoothing}))


class WithReferenceRows(DefenseConfig):
    """Control, not a defense: plain training on the members plus N defender reference rows.

    Reported next to any defense that trains on reference rows, so the extra data is not
    credited to the defense.
    """

    method: Literal["with_reference_rows"] = "with_reference_rows"
    rows: int = Field(1000, ge=1, description="reference rows added to the members")


@register_defense(WithReferenceRows, "train")
def _with_reference_rows(config: WithReferenceRows, ctx: DefenseContext) -> nn.Module:
    if ctx.x_reference is None or len(ctx.x_reference) < config.rows:
        have = 0 if ctx.x_reference is None else len(ctx.x_reference)
        raise ConfigError(
            f"rows: {config.rows} reference rows asked, {have} available (data.reference_size)"
        )
    x = np.concatenate([ctx.x, ctx.x_reference[: config.rows]])
    y = np.concatenate([ctx.y, ctx.y_reference[: config.rows]])
    return ctx.train_fresh(x, y)


class RelaxLossDefense(DefenseConfig):
    """RelaxLoss (Chen et al. 2022): no descent below a target loss; ascend and flatten there."""

    method: Literal["relaxloss"] = "relaxloss"
    alpha: float = Field(1.0, gt=0, description="target loss: members' mean loss is held near it")


@register_defense(RelaxLossDefense, "train")
def _relaxloss(config: RelaxLossDefense, ctx: DefenseContext) -> nn.Module:
    return ctx.train_fresh(objective=RelaxLoss(config.alpha))
