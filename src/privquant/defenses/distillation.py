"""Distillation defenses: the deployed model learns labels that no model saw for that point.

- ``split_distill`` (SELENA-style, sized for a CPU): K sub-teachers, each trained on the
  members minus the share assigned to it; every member is labelled only by the teachers that
  did not train on it; optionally the defender's reference rows, labelled by all teachers, join
  the student's data. A fresh student (never teacher-initialized: the weights carry the
  memorization) trains on those soft labels.
- ``reference_distill`` (DMP-style, cheaper): one teacher trained on the members labels the
  defender's reference rows; a fresh student trains on those rows only.

Followed by ``qat`` with ``targets: self``, the quantized model learns the student's own soft
outputs, so no hard member label re-enters at the quantization step either.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from privquant.defenses.base import DefenseConfig, DefenseContext, register_defense
from privquant.errors import ConfigError
from privquant.training import SoftTargetCrossEntropy, TrainConfig, predict_logits

TEACHER_SEED_OFFSET = 1_000_003  # teachers' seeds differ from every population model's


class SplitDistill(DefenseConfig):
    """Split self-distillation: each member labelled only by sub-teachers that never saw it."""

    method: Literal["split_distill"] = "split_distill"
    teachers: int = Field(4, ge=2, le=16, description="sub-teachers K")
    exclusions: int = Field(
        1, ge=1, description="teachers each member is withheld from (and labelled by); < K"
    )
    temperature: float = Field(1.0, gt=0, description="softmax temperature of the teachers' labels")
    hard_label_weight: float = Field(
        0.0, ge=0, le=1, description="mix of the one-hot true label into the targets (0: soft only)"
    )
    reference_rows: int = Field(
        0, ge=0, description="defender reference rows labelled by all teachers and added (0: none)"
    )
    student_epochs: int | None = Field(
        None, ge=1, description="the student's training epochs (None: the run's train.epochs, as "
        "each sub-teacher); soft labels are harder to fit than hard ones",
    )  # fmt: skip

    def check(self) -> None:
        if self.exclusions >= self.teachers:
            raise ValueError(f"exclusions: must be below teachers ({self.teachers}), got {self.exclusions}: "
                             "each member needs a teacher that never saw it")  # fmt: skip

    def reference_rows_needed(self) -> int:
        return self.reference_rows


class ReferenceDistill(DefenseConfig):
    """DMP-style: a teacher trained on the members labels reference rows; the student learns those."""

    method: Literal["reference_distill"] = "reference_distill"
    temperature: float = Field(1.0, gt=0)
    reference_rows: int | None = Field(None, ge=1, description="rows to use (None: all)")

    def reference_rows_needed(self) -> int:
        return self.reference_rows or 1


def assign_exclusions(
    n: int, teachers: int, exclusions: int, rng: np.random.Generator
) -> np.ndarray:
    """``excluded[k, i]``: member i is withheld from teacher k; every member from exactly
    ``exclusions`` teachers, every teacher missing about the same share."""
    if not 1 <= exclusions < teachers:
        raise ConfigError(
            f"exclusions: must be in 1..{teachers - 1} (teachers - 1), got {exclusions}"
        )
    if n < teachers:
        raise ConfigError(
            f"split_distill: {teachers} teachers need at least as many members, got {n}"
        )
    excluded = np.zeros((teachers, n), dtype=bool)
    # Round-robin over a random order keeps the teachers' shares equal to within one point.
    order = rng.permutation(n)
    for j in range(exclusions):
        excluded[(np.arange(n) + j) % teachers, order] = True
    return excluded


def soft_labels(logits: np.ndarray, temperature: float) -> np.ndarray:
    z = torch.from_numpy(logits).double() / temperature
    return z.softmax(-1).numpy()


def _teacher_recipe(ctx: DefenseContext, k: int) -> TrainConfig:
    return ctx.train.model_copy(update={"seed": ctx.train.seed + TEACHER_SEED_OFFSET * (k + 1)})


def split_teacher_targets(
    config: SplitDistill, ctx: DefenseContext
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train the sub-teachers and build the student's data.

    Returns (x, targets [rows, classes], excluded [K, members]): the members first, then any
    reference rows. Member i's target averages only teachers k with ``excluded[k, i]``.
    """
    n, c = len(ctx.x), ctx.num_classes
    rng = np.random.default_rng(ctx.train.seed + TEACHER_SEED_OFFSET)
    excluded = assign_exclusions(n, config.teachers, config.exclusions, rng)
    ref_pos = (
        ctx.reference_positions(config.reference_rows, "reference_rows")
        if config.reference_rows
        else None
    )
    x_ref = None if ref_pos is None else ctx.x_reference[ref_pos]
    member_targets = np.zeros((n, c))
    ref_targets = None if x_ref is None else np.zeros((len(x_ref), c))
    for k in range(config.teachers):
        held_out = np.nonzero(excluded[k])[0]
        on_held_out, on_reference = teacher_logits(ctx, ~excluded[k], _teacher_recipe(ctx, k))
        member_targets[held_out] += soft_labels(on_held_out, config.temperature)
        if ref_targets is not None:
            ref_targets += soft_labels(on_reference[ref_pos], config.temperature)
    member_targets /= config.exclusions
    onehot = np.eye(c)[ctx.y]
    member_targets = (
        1 - config.hard_label_weight
    ) * member_targets + config.hard_label_weight * onehot
    if ref_targets is None:
        return ctx.x, member_targets, excluded
    return (
        np.concatenate([ctx.x, x_ref]),
        np.concatenate([member_targets, ref_targets / config.teachers]),
        excluded,
    )


def teacher_logits(
    ctx: DefenseContext, train_rows: np.ndarray, recipe: TrainConfig
) -> tuple[np.ndarray, np.ndarray]:
    """A teacher trained on members ``train_rows``: its logits on the other members and on
    every reference row (empty when there are none).

    Cached when the context says what its model is, so variants that differ only in how the
    labels are used (temperature, reference rows, hard-label mix) share their teachers.
    """
    held_out = ~train_rows
    x_ref = ctx.x_reference if ctx.x_reference is not None else ctx.x[:0]

    def compute() -> tuple[np.ndarray, np.ndarray, float]:
        start = time.perf_counter()
        teacher = ctx.train_fresh(ctx.x[train_rows], ctx.y[train_rows], recipe)
        seconds = time.perf_counter() - start
        on_ref = predict_logits(teacher, x_ref) if len(x_ref) else np.zeros((0, ctx.num_classes))
        return predict_logits(teacher, ctx.x[held_out]), on_ref, seconds

    if ctx.cache is None or ctx.identity is None:  # as the cached path returns them, to the bit
        held, ref, _ = compute()
        return held.astype(np.float32).astype(np.float64), ref.astype(np.float32).astype(np.float64)
    key = ctx.cache.key(kind="split_teacher_logits", identity=ctx.identity, x=ctx.x, y=ctx.y,
                        train_rows=train_rows, train=recipe.model_dump(mode="json"),
                        reference=x_ref)  # fmt: skip
    built = False

    def build(folder: Path) -> None:
        nonlocal built
        on_held_out, on_ref, seconds = compute()
        with open(folder / "logits.npz", "wb") as f:
            np.savez(f, held_out=on_held_out.astype(np.float32),
                     reference=on_ref.astype(np.float32), train_seconds=np.float64(seconds))  # fmt: skip
        built = True

    with np.load(ctx.cache.get_or_create(key, build) / "logits.npz") as z:
        if not built:  # reused: its training still belongs to this recipe's cost
            ctx.reused_seconds += float(z["train_seconds"]) if "train_seconds" in z else np.nan
        return z["held_out"].astype(np.float64), z["reference"].astype(np.float64)


def train_student(
    ctx: DefenseContext, x: np.ndarray, targets: np.ndarray, epochs: int | None = None
) -> nn.Module:
    """A fresh model (new initialization, normalization fitted on ``x``) trained on soft targets,
    for ``epochs`` (None: the run's)."""
    objective = SoftTargetCrossEntropy(torch.from_numpy(targets))
    hard = targets.argmax(-1)  # only for the trainer's running accuracy
    recipe = ctx.train if epochs is None else ctx.train.model_copy(update={"epochs": epochs})
    return ctx.train_fresh(x, hard, recipe, objective=objective)


@register_defense(SplitDistill, "train")
def _split_distill(config: SplitDistill, ctx: DefenseContext) -> nn.Module:
    x, targets, _ = split_teacher_targets(config, ctx)
    return train_student(ctx, x, targets, config.student_epochs)


@register_defense(ReferenceDistill, "train")
def _reference_distill(config: ReferenceDistill, ctx: DefenseContext) -> nn.Module:
    x_ref, _ = ctx.reference_rows(config.reference_rows, "reference_rows")
    teacher = ctx.train_fresh(ctx.x, ctx.y, _teacher_recipe(ctx, 0))
    targets = soft_labels(predict_logits(teacher, x_ref), config.temperature)
    return train_student(ctx, x_ref, targets)
