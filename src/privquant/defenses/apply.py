"""Apply a variant's defense steps to one model: the one path every caller goes through.

The pipeline calls the stage functions separately so it can cache each stage's result;
:func:`apply_defense` composes them for callers without a cache (``audit_model``, the CLI).
"""

from __future__ import annotations

from torch import nn

from privquant.defenses.base import DefenseConfig, DefenseContext, get_defense
from privquant.defenses.variant import VariantConfig
from privquant.errors import ConfigError


def train_model(step: DefenseConfig | None, ctx: DefenseContext) -> nn.Module:
    """A freshly trained model: plain training on the members, or a train-stage defense."""
    if step is None:
        return ctx.train_fresh()
    entry = get_defense(step.method)
    if entry.stage != "train":
        raise ConfigError(f"method {step.method!r} is a {entry.stage}-stage defense, not train")
    return entry.handler(step, ctx)


def _apply_stage(
    stage: str, steps: list[DefenseConfig], model: nn.Module, ctx: DefenseContext
) -> nn.Module:
    for step in steps:
        entry = get_defense(step.method)
        if entry.stage != stage:
            raise ConfigError(
                f"method {step.method!r} is a {entry.stage}-stage defense, not {stage}"
            )
        model = entry.handler(step, model, ctx)
    return model


def apply_transforms(
    steps: list[DefenseConfig], model: nn.Module, ctx: DefenseContext
) -> nn.Module:
    """Turn a trained model into the deployed one (each transform in order)."""
    return _apply_stage("transform", steps, model, ctx)


def apply_outputs(steps: list[DefenseConfig], model: nn.Module, ctx: DefenseContext) -> nn.Module:
    """Wrap the deployed model's outputs (each output stage in order)."""
    return _apply_stage("output", steps, model, ctx)


def apply_defense(
    variant: VariantConfig, ctx: DefenseContext, model: nn.Module | None = None
) -> nn.Module:
    """The model an attacker queries under ``variant``.

    ``model`` is the already-trained model; it is ignored (and may be None) when the variant has
    a train-stage step, which trains a fresh one from ``ctx``.
    """
    if variant.train_step is not None or model is None:
        model = train_model(variant.train_step, ctx)
    model = apply_transforms(variant.transform_steps, model, ctx)
    return apply_outputs(variant.output_steps, model, ctx)
