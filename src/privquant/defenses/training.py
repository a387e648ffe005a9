"""Train-stage methods: change how every model of the population is trained."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field
from torch import nn

from privquant.defenses.base import DefenseConfig, DefenseContext, register_defense
from privquant.models.info import model_info
from privquant.training import Callback, RelaxLoss, evaluate


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

    def reference_rows_needed(self) -> int:
        return self.rows


@register_defense(WithReferenceRows, "train")
def _with_reference_rows(config: WithReferenceRows, ctx: DefenseContext) -> nn.Module:
    x_ref, y_ref = ctx.reference_rows(config.rows, "rows")
    return ctx.train_fresh(np.concatenate([ctx.x, x_ref]), np.concatenate([ctx.y, y_ref]))


class RelaxLossDefense(DefenseConfig):
    """RelaxLoss (Chen et al. 2022): no descent below a target loss; ascend and flatten there."""

    method: Literal["relaxloss"] = "relaxloss"
    alpha: float = Field(1.0, gt=0, description="target loss: members' mean loss is held near it")


@register_defense(RelaxLossDefense, "train")
def _relaxloss(config: RelaxLossDefense, ctx: DefenseContext) -> nn.Module:
    return ctx.train_fresh(objective=RelaxLoss(config.alpha))


class WeightDecay(DefenseConfig):
    """Stronger L2 weight decay than the recipe's (a classic regularizer against overfitting)."""

    method: Literal["weight_decay"] = "weight_decay"
    value: float = Field(
        5e-3, gt=0, description="weight decay coefficient (the recipe's is replaced)"
    )


@register_defense(WeightDecay, "train")
def _weight_decay(config: WeightDecay, ctx: DefenseContext) -> nn.Module:
    return ctx.train_fresh(train=ctx.train.model_copy(update={"weight_decay": config.value}))


class EarlyStopping(DefenseConfig):
    """Stop when the loss on held-out defender rows stops improving; keep the best epoch."""

    method: Literal["early_stopping"] = "early_stopping"
    patience: int = Field(2, ge=1, description="epochs without improvement before stopping")
    validation_rows: int = Field(
        1000, ge=1, description="defender reference rows that measure the held-out loss"
    )

    def reference_rows_needed(self) -> int:
        return self.validation_rows


class _BestEpoch(Callback):
    """Tracks held-out loss each epoch, stops after ``patience`` epochs without a new best, and
    restores the best epoch's weights at the end."""

    def __init__(self, x: np.ndarray, y: np.ndarray, patience: int) -> None:
        self.x, self.y, self.patience = x, y, patience
        self.best_loss, self.best_epoch, self.best_state = float("inf"), 0, None

    def on_epoch_end(self, epoch: int, stats: dict[str, float], model: nn.Module) -> bool:
        loss = evaluate(model, self.x, self.y)["loss"]
        model.train()
        stats["validation_loss"] = loss
        if loss < self.best_loss:
            self.best_loss, self.best_epoch = loss, epoch + 1
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return epoch + 1 - self.best_epoch >= self.patience

    def on_train_end(self, model: nn.Module) -> None:
        if self.best_state is not None:
            model.load_state_dict(self.best_state)


@register_defense(EarlyStopping, "train")
def _early_stopping(config: EarlyStopping, ctx: DefenseContext) -> nn.Module:
    x_val, y_val = ctx.reference_rows(config.validation_rows, "validation_rows")
    best = _BestEpoch(x_val, y_val, config.patience)
    model = ctx.train_fresh(callbacks=[best])
    model_info(model).defense_info = {"stopped_at_epoch": float(best.best_epoch)}
    return model
