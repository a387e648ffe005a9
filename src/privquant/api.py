"""Defend your own model in one call: ``privquant.defend(...)``, then ``.save`` and ``.audit``.

The deployed model is built by the same defense handlers the audit pipeline runs for every
model; ``.audit`` trains shadows with the same recipe and audits exactly this deployed model's
steps (its target, model 0, is built from the same members, recipe and seed, so its outputs are
the deployed model's: a test checks it).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from privquant.defenses import DefenseContext, VariantConfig, apply_outputs, apply_transforms
from privquant.defenses.apply import train_model
from privquant.defenses.recipes import default_recipe
from privquant.errors import ConfigError
from privquant.models.info import model_info
from privquant.training import TrainConfig, evaluate

Arrays = tuple[np.ndarray, np.ndarray]


def _pair(value: Any, name: str) -> Arrays:
    if not isinstance(value, tuple | list) or len(value) != 2:
        raise ConfigError(f"{name}: expected an (x, y) pair of arrays")
    x, y = np.asarray(value[0]), np.asarray(value[1])
    if len(x) != len(y) or len(x) == 0:
        raise ConfigError(
            f"{name}: {len(x)} inputs and {len(y)} labels; expected one label per input"
        )
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise ConfigError(f"{name}: labels must be non-negative integers, got {y.dtype}")
    return x, y.astype(np.int64)


@dataclass
class DeployedModel:
    """A defended model ready to ship: ``module`` is what it releases (output steps included)."""

    module: nn.Module
    quantized: nn.Module  # before the output steps: what the integer export holds
    variant: VariantConfig
    train: Arrays
    reference: Arrays | None
    model_fn: Callable[[], nn.Module]
    train_config: TrainConfig
    seed: int
    num_classes: int
    info: dict[str, Any] = field(default_factory=dict)

    def __call__(self, x: Any) -> Any:
        return self.module(x)

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        return evaluate(self.module, x, y)

    def save(self, folder: str | os.PathLike[str], onnx: bool = False, int8: bool = False) -> Path:
        """Write the integer export (or float weights), the output steps, ``defense.json`` and,
        if asked, ``model.onnx`` (the released outputs) and ``model.int8.onnx``."""
        from privquant.artifacts import atomic_write_json, save_checkpoint
        from privquant.defenses.serving import save_output_stage
        from privquant.quant import export_quantized, quant_layers

        folder = Path(folder)
        if int8 and self.variant.output_steps:
            raise ConfigError(
                "int8: the int8 ONNX graph cannot carry the output steps "
                f"{[s.method for s in self.variant.output_steps]}; save with onnx=True instead"
            )
        if quant_layers(self.quantized):
            export_quantized(self.quantized, folder)
        else:
            save_checkpoint(folder, self.quantized, {"model": model_info(self.quantized).spec})
        save_output_stage(self.module, self.variant.output_steps, folder)
        atomic_write_json(folder / "defense.json", self.variant.model_dump(mode="json"))
        shape = tuple(self.train[0].shape[1:])
        if onnx:
            from privquant.quant.onnx_export import export_onnx

            export_onnx(self.module, folder / "model.onnx", shape)
        if int8:
            from privquant.quant.onnx_int8 import export_onnx_int8

            export_onnx_int8(self.quantized, folder / "model.int8.onnx", shape, self.train[0][:512])
        return folder

    def audit(
        self,
        nonmembers: Arrays,
        n_shadows: int = 8,
        test: Arrays | None = None,
        attacks: str | Sequence[str] | None = None,
        n_bootstrap: int = 200,
        progress: bool = True,
    ) -> Any:
        """Audit FP32 vs this deployed recipe against membership inference (typed AuditResults).

        The members are the training rows; ``nonmembers`` are rows the model never saw. Each
        shadow model gets the same steps (the adaptive attacker)."""
        from privquant.pipeline import audit_model

        nonmembers = _pair(nonmembers, "nonmembers")
        ctx = self._context()
        fp32 = ctx.train_fresh()
        return audit_model(
            fp32, self.train, nonmembers, self.model_fn, self.train_config, n_shadows=n_shadows,
            variants=[VariantConfig(name="fp32"), self.variant], attacks=attacks,
            test=test, reference=self.reference, n_bootstrap=n_bootstrap, seed=self.seed,
            progress=progress,
        )  # fmt: skip

    def _context(self) -> DefenseContext:
        ref = self.reference
        return DefenseContext(x=self.train[0], y=self.train[1],
                              x_reference=None if ref is None else ref[0],
                              y_reference=None if ref is None else ref[1],
                              num_classes=self.num_classes,
                              train=self.train_config.model_copy(update={"seed": self.seed}),
                              seed=self.seed, model_fn=lambda x: self.model_fn())  # fmt: skip


def _resolved_recipe(
    cfg: TrainConfig,
    model_fn: Callable[[], nn.Module],
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
) -> TrainConfig:
    """``precision``/``channels_last: auto`` decided as the audit pipeline decides them for this
    architecture (the same measurement, under the same name), so ``.audit`` trains its model 0
    exactly as this call trains the deployed model."""
    import torch

    from privquant.models.registry import register_user_model
    from privquant.population import model_factory
    from privquant.training.precision import resolve_train_config
    from privquant.training.trainer import to_model_input

    name = register_user_model(model_fn)
    probe = model_factory(name, n_classes)(x[:2])
    sample = to_model_input(torch.as_tensor(x[:64])), torch.as_tensor(y[:64])
    return resolve_train_config(cfg, probe, *sample, name)


def defend(
    model_fn: Callable[[], nn.Module],
    train: Arrays,
    reference: Arrays | None = None,
    bits: float = 4,
    recipe: str | Sequence[dict[str, Any]] = "default",
    train_config: TrainConfig | None = None,
    num_classes: int | None = None,
    seed: int = 0,
) -> DeployedModel:
    """Train and quantize ``model_fn()``'s architecture on ``train`` with a membership-inference
    defense; return the deployed model (``.save(folder)``, ``.audit(nonmembers)``).

    ``model_fn`` returns a fresh, untrained model (your own ``nn.Module``) that takes float
    inputs (uint8 images arrive scaled to [0, 1]). ``recipe``: ``"default"`` (split
    self-distillation, then QAT on the student's own outputs at ``bits``) or a list of defense
    steps as in a config's ``variants[].steps``. ``reference``: defender rows disjoint from
    ``train``, for steps that read them.
    """
    x, y = _pair(train, "train")
    ref = None if reference is None else _pair(reference, "reference")
    if isinstance(recipe, str) and recipe != "default":
        raise ConfigError(f"recipe: 'default' or a list of steps, got {recipe!r}")
    steps = default_recipe(bits) if recipe == "default" else list(recipe)
    variant = VariantConfig(name="defended", steps=steps)
    need = max((s.reference_rows_needed() for s in variant.steps), default=0)
    have = 0 if ref is None else len(ref[0])
    if need > have:
        raise ConfigError(f"reference: the recipe needs {need} defender reference rows, got {have}")
    top = int(max(y.max(), 0 if ref is None else ref[1].max()))
    n_classes = num_classes or top + 1
    if top >= n_classes:
        raise ConfigError(
            f"num_classes: {n_classes}, but the labels reach {top}; labels must lie in 0..{n_classes - 1}"
        )
    cfg = _resolved_recipe(train_config or TrainConfig(), model_fn, x, y, n_classes)
    deployed = DeployedModel(
        nn.Identity(), nn.Identity(), variant, (x, y), ref, model_fn, cfg, seed, n_classes
    )
    ctx = deployed._context()
    base = train_model(variant.train_step, ctx)
    quantized = apply_transforms(variant.transform_steps, base, ctx)
    deployed.quantized = quantized.eval()
    deployed.module = apply_outputs(variant.output_steps, quantized, ctx).eval()
    return deployed
