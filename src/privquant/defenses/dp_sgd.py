"""DP-SGD (Abadi et al. 2016) through Opacus: the baseline with a formal guarantee.

Trained by the one trainer: a callback wraps the model for per-example gradients and the
optimizer for clipping and noise; batches are Poisson-sampled so the accountant's epsilon holds.
The noise multiplier is solved from the target epsilon before training (or given, for the
high-utility points with a vacuous epsilon that Aerni et al. 2024 compare heuristic defenses
against); the epsilon actually spent (from the same accountant) is recorded with the model and
lands in results.json. Augmentation multiplicity (De et al. 2022) averages each row's gradient
over K augmented copies before clipping: the sensitivity, and so the accounting, are unchanged.

Opacus is an optional extra: ``pip install 'privquant[dp]'``.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from privquant.defenses.base import DefenseConfig, DefenseContext, register_defense
from privquant.errors import ConfigError
from privquant.models.info import model_info
from privquant.models.layers import batchnorm_to_groupnorm
from privquant.training import Callback, Trainer


class DPSGD(DefenseConfig):
    """DP-SGD (Opacus): per-example clipping, Gaussian noise, Poisson sampling, RDP accounting."""

    # Per-example gradient hooks run in fp32 (bf16 activations would change the clipping) and NCHW.
    fixed_precision: ClassVar[dict[str, Any] | None] = {"precision": "fp32", "channels_last": False}

    method: Literal["dp_sgd"] = "dp_sgd"
    epsilon: float = Field(8.0, gt=0, description="target epsilon of the whole training run")
    noise_multiplier: float | None = Field(
        None, gt=0, description="instead of epsilon: the noise multiplier (the epsilon it spends "
        "is reported; a small one gives the vacuous-epsilon, high-utility point)",
    )  # fmt: skip
    augment_multiplicity: int = Field(
        1, ge=1, le=64, description="augmented copies per sampled row, gradients averaged "
        "before clipping (De et al. 2022); needs the recipe's augment",
    )  # fmt: skip
    delta: float | None = Field(
        None, gt=0, lt=1, description="target delta (None: 1 / (10 * members))"
    )
    max_grad_norm: float = Field(1.0, gt=0, description="per-example gradient clipping norm")
    epochs: int | None = Field(None, ge=1, description="None: the recipe's epochs")
    lr: float | None = Field(None, gt=0, description="None: the recipe's learning rate")
    batch_size: int | None = Field(
        None, ge=1, description="expected (Poisson) batch size; None: the recipe's"
    )
    momentum: float | None = Field(
        None, ge=0, lt=1, description="None: the recipe's (DP-SGD's large learning rates "
        "usually go with none)",
    )  # fmt: skip
    accountant: Literal["rdp", "prv"] = "rdp"
    per_example: Literal["hooks", "expanded_weights"] = Field(
        "hooks", description="how per-example gradients are computed: Opacus' module hooks, or "
        "torch's expanded weights (the same model to float precision; on a 2-core Zen 4 a whole "
        "DP epoch of ResNet-20 was no faster: docs/results/dp_throughput.md)",
    )  # fmt: skip

    @model_validator(mode="after")
    def _one_noise_source(self) -> DPSGD:
        if self.noise_multiplier is not None and "epsilon" in self.model_fields_set:
            raise ValueError(
                "give epsilon (the noise is solved from it) or noise_multiplier, not both"
            )
        return self


def _require_opacus() -> Any:
    try:
        import opacus
    except ImportError:
        raise ConfigError(
            "method dp_sgd: needs Opacus; install the extra with pip install 'privquant[dp]'"
        ) from None
    return opacus


class DPSGDCallback(Callback):
    """Wraps model and optimizer for DP-SGD and accounts every step."""

    def __init__(
        self, noise_multiplier: float, max_grad_norm: float, batch_size: int, sample_rate: float,
        accountant: str, seed: int, augment_multiplicity: int = 1, per_example: str = "hooks",
    ) -> None:  # fmt: skip
        from opacus.accountants import create_accountant

        self.noise_multiplier = noise_multiplier
        self.max_grad_norm = max_grad_norm
        self.batch_size = batch_size
        self.sample_rate = sample_rate
        self.accountant = create_accountant(accountant)
        self.noise = torch.Generator().manual_seed(seed)  # the same seed gives the same model
        self.augment_multiplicity = augment_multiplicity
        self.per_example = per_example
        self.steps = 0
        self._wrapped: Any = None

    def on_train_start(
        self, model: nn.Module, optimizer: torch.optim.Optimizer
    ) -> tuple[nn.Module, torch.optim.Optimizer]:
        self._wrapped = per_example_module(model, self.per_example)
        dp_optimizer = _optimizer_class()(optimizer, noise_multiplier=self.noise_multiplier,
                                          max_grad_norm=self.max_grad_norm, expected_batch_size=self.batch_size,
                                          loss_reduction="mean", generator=self.noise)  # fmt: skip
        dp_optimizer.augment_multiplicity = self.augment_multiplicity
        return self._wrapped, dp_optimizer

    def on_step_end(self, batch_size: int) -> None:
        # Every step is accounted, an empty Poisson batch too (the sampling happened).
        self.accountant.step(noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate)
        self.steps += 1
        # The step has used them; expanded weights refuse a forward pass while they are set.
        self._wrapped.set_grad_sample_to_none()

    def on_train_end(self, model: nn.Module) -> None:
        if self._wrapped is not None:
            self._wrapped._close()  # removes the hooks; the plain model stays usable
            self._wrapped = None

    def epsilon(self, delta: float) -> float:
        return float(self.accountant.get_epsilon(delta=delta))


def per_example_module(model: nn.Module, per_example: str) -> Any:
    """``model`` wrapped so its backward pass leaves each parameter's per-example gradients in
    ``grad_sample`` (what Opacus' DP optimizer clips): by module hooks, or by torch's expanded
    weights (every parametrized layer must be one torch supports: linear, convolution, norms,
    embedding)."""
    if per_example == "hooks":
        from opacus import GradSampleModule

        return GradSampleModule(model, loss_reduction="mean")
    from opacus.grad_sample import GradSampleModuleExpandedWeights

    supported = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.GroupNorm, nn.LayerNorm,
                 nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.Embedding)  # fmt: skip
    for name, module in model.named_modules():
        if any(True for _ in module.parameters(recurse=False)) and not isinstance(
            module, supported
        ):
            raise ConfigError(
                f"dp_sgd.per_example: expanded_weights cannot compute {name} ({type(module).__name__})'s "
                "per-example gradients; use per_example: hooks"
            )
    return GradSampleModuleExpandedWeights(model, loss_reduction="mean")


def _optimizer_class() -> type:
    """Opacus' DPOptimizer that first averages each row's K augmented copies' gradients."""
    from opacus.optimizers import DPOptimizer

    class AugmentedDPOptimizer(DPOptimizer):
        augment_multiplicity = 1

        def clip_and_accumulate(self) -> None:
            k = self.augment_multiplicity
            if k > 1:  # the trainer puts a row's copies next to each other
                for p in self.params:
                    g = self._get_flat_grad_sample(p)
                    p.grad_sample = g.reshape(len(g) // k, k, *g.shape[1:]).mean(1)
            super().clip_and_accumulate()

    return AugmentedDPOptimizer


def prepare_for_dp(model: nn.Module) -> int:
    """``model`` made fit for per-example gradients, in place (plan times DP-SGD's step on a copy
    made so): BatchNorm as GroupNorm, no in-place activations (they break Opacus' backward hooks).
    Returns the number of BatchNorm layers replaced."""
    converted = batchnorm_to_groupnorm(model)
    for module in model.modules():
        if getattr(module, "inplace", False):
            module.inplace = False
    return converted


def dp_train(config: DPSGD, ctx: DefenseContext) -> tuple[nn.Module, dict[str, float]]:
    """A model trained with DP-SGD on the members, and its privacy accounting."""
    _require_opacus()
    from opacus.accountants.utils import get_noise_multiplier

    n = len(ctx.x)
    updates: dict[str, Any] = dict(config.fixed_precision or {})
    for field in ("epochs", "lr", "batch_size", "momentum"):
        if getattr(config, field) is not None:
            updates[field] = getattr(config, field)
    train = ctx.train.model_copy(update=updates)
    if train.batch_size > n:
        raise ConfigError(f"batch_size: {train.batch_size} exceeds the {n} members")
    delta = config.delta if config.delta is not None else 1.0 / (10 * n)
    sample_rate = train.batch_size / n
    steps = train.epochs * -(-n // train.batch_size)
    if config.augment_multiplicity > 1 and train.augment == "none":
        raise ConfigError(
            f"dp_sgd.augment_multiplicity: {config.augment_multiplicity} copies need an augmentation; "
            "the recipe's augment is none (set train.augment, e.g. crop+flip)"
        )
    sigma = config.noise_multiplier
    if sigma is None:
        with warnings.catch_warnings():  # RDP's "optimal order is the largest alpha": looser bound
            warnings.filterwarnings("ignore", message="Optimal order", category=UserWarning)
            sigma = get_noise_multiplier(target_epsilon=config.epsilon, target_delta=delta, sample_rate=sample_rate,
                                         steps=steps, accountant=config.accountant)  # fmt: skip
    model = ctx.fresh_model(seed=train.seed)
    converted = prepare_for_dp(model)
    if converted:
        spec = dict(model_info(model).spec or {})
        model_info(model).spec = {**spec, "norm": "group"}
        print(f"privquant: dp_sgd replaced {converted} BatchNorm layers by GroupNorm (per-example "
              "gradients need layers that do not mix the examples of a batch)", file=sys.stderr)  # fmt: skip
    callback = DPSGDCallback(sigma, config.max_grad_norm, train.batch_size, sample_rate, config.accountant,
                             seed=train.seed, augment_multiplicity=config.augment_multiplicity,
                             per_example=config.per_example)  # fmt: skip
    with warnings.catch_warnings():  # the first layer's input needs no gradient; harmless
        warnings.filterwarnings("ignore", message="Full backward hook", category=UserWarning)
        warnings.filterwarnings("ignore", message="Optimal order", category=UserWarning)
        trainer = Trainer(train, callbacks=[callback], poisson_sampling=True,
                          augment_multiplicity=config.augment_multiplicity)  # fmt: skip
        trainer.fit(model, ctx.x, ctx.y, progress=True)  # 30-50 min per model on 2 cores: show it
        epsilon = callback.epsilon(delta)
    info = {"epsilon": epsilon, "delta": delta, "noise_multiplier": float(sigma),
            "sample_rate": sample_rate, "steps": float(callback.steps), "max_grad_norm": config.max_grad_norm,
            "augment_multiplicity": float(config.augment_multiplicity)}  # fmt: skip
    return model, info


@register_defense(DPSGD, "train")
def _dp_sgd(config: DPSGD, ctx: DefenseContext) -> nn.Module:
    model, info = dp_train(config, ctx)
    model_info(model).defense_info = info  # recorded with the checkpoint
    return model
