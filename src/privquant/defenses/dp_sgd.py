"""DP-SGD (Abadi et al. 2016) through Opacus: the baseline with a formal guarantee.

Trained by the one trainer: a callback wraps the model for per-example gradients and the
optimizer for clipping and noise; batches are Poisson-sampled so the accountant's epsilon holds.
The noise multiplier is solved from the target epsilon before training; the epsilon actually
spent (from the same accountant) is recorded with the model and lands in results.json.

Opacus is an optional extra: ``pip install 'privquant[dp]'``.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from privquant.defenses.base import DefenseConfig, DefenseContext, register_defense
from privquant.errors import ConfigError
from privquant.models.info import model_info
from privquant.models.layers import batchnorm_to_groupnorm
from privquant.training import Callback, Trainer


class DPSGD(DefenseConfig):
    """DP-SGD (Opacus): per-example clipping, Gaussian noise, Poisson sampling, RDP accounting."""

    method: Literal["dp_sgd"] = "dp_sgd"
    epsilon: float = Field(8.0, gt=0, description="target epsilon of the whole training run")
    delta: float | None = Field(
        None, gt=0, lt=1, description="target delta (None: 1 / (10 * members))"
    )
    max_grad_norm: float = Field(1.0, gt=0, description="per-example gradient clipping norm")
    epochs: int | None = Field(None, ge=1, description="None: the recipe's epochs")
    lr: float | None = Field(None, gt=0, description="None: the recipe's learning rate")
    batch_size: int | None = Field(
        None, ge=1, description="expected (Poisson) batch size; None: the recipe's"
    )
    accountant: Literal["rdp", "prv"] = "rdp"


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
        accountant: str, seed: int,
    ) -> None:  # fmt: skip
        from opacus.accountants import create_accountant

        self.noise_multiplier = noise_multiplier
        self.max_grad_norm = max_grad_norm
        self.batch_size = batch_size
        self.sample_rate = sample_rate
        self.accountant = create_accountant(accountant)
        self.noise = torch.Generator().manual_seed(seed)  # the same seed gives the same model
        self.steps = 0
        self._wrapped: Any = None

    def on_train_start(
        self, model: nn.Module, optimizer: torch.optim.Optimizer
    ) -> tuple[nn.Module, torch.optim.Optimizer]:
        from opacus import GradSampleModule
        from opacus.optimizers import DPOptimizer

        self._wrapped = GradSampleModule(model, loss_reduction="mean")
        dp_optimizer = DPOptimizer(optimizer, noise_multiplier=self.noise_multiplier,
                                   max_grad_norm=self.max_grad_norm, expected_batch_size=self.batch_size,
                                   loss_reduction="mean", generator=self.noise)  # fmt: skip
        return self._wrapped, dp_optimizer

    def on_step_end(self, batch_size: int) -> None:
        # Every step is accounted, an empty Poisson batch too (the sampling happened).
        self.accountant.step(noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate)
        self.steps += 1

    def on_train_end(self, model: nn.Module) -> None:
        if self._wrapped is not None:
            self._wrapped._close()  # removes the hooks; the plain model stays usable
            self._wrapped = None

    def epsilon(self, delta: float) -> float:
        return float(self.accountant.get_epsilon(delta=delta))


def dp_train(config: DPSGD, ctx: DefenseContext) -> tuple[nn.Module, dict[str, float]]:
    """A model trained with DP-SGD on the members, and its privacy accounting."""
    _require_opacus()
    from opacus.accountants.utils import get_noise_multiplier

    n = len(ctx.x)
    updates: dict[str, Any] = {"precision": "fp32", "channels_last": False}
    for field in ("epochs", "lr", "batch_size"):
        if getattr(config, field) is not None:
            updates[field] = getattr(config, field)
    # Per-example gradient hooks run in fp32 (bf16 activations would change the clipping).
    train = ctx.train.model_copy(update=updates)
    if train.batch_size > n:
        raise ConfigError(f"batch_size: {train.batch_size} exceeds the {n} members")
    delta = config.delta if config.delta is not None else 1.0 / (10 * n)
    sample_rate = train.batch_size / n
    steps = train.epochs * -(-n // train.batch_size)
    with warnings.catch_warnings():  # RDP's "optimal order is the largest alpha": a looser bound
        warnings.filterwarnings("ignore", message="Optimal order", category=UserWarning)
        sigma = get_noise_multiplier(target_epsilon=config.epsilon, target_delta=delta, sample_rate=sample_rate,
                                     steps=steps, accountant=config.accountant)  # fmt: skip
    model = ctx.fresh_model(seed=train.seed)
    converted = batchnorm_to_groupnorm(model)
    if converted:
        spec = dict(model_info(model).spec or {})
        model_info(model).spec = {**spec, "norm": "group"}
        print(f"privquant: dp_sgd replaced {converted} BatchNorm layers by GroupNorm (per-example "
              "gradients need layers that do not mix the examples of a batch)", file=sys.stderr)  # fmt: skip
    for module in model.modules():  # in-place activations break Opacus' backward hooks
        if getattr(module, "inplace", False):
            module.inplace = False
    callback = DPSGDCallback(sigma, config.max_grad_norm, train.batch_size, sample_rate, config.accountant,
                             seed=train.seed)  # fmt: skip
    with warnings.catch_warnings():  # the first layer's input needs no gradient; harmless
        warnings.filterwarnings("ignore", message="Full backward hook", category=UserWarning)
        warnings.filterwarnings("ignore", message="Optimal order", category=UserWarning)
        trainer = Trainer(train, callbacks=[callback], poisson_sampling=True)
        trainer.fit(model, ctx.x, ctx.y, progress=False)
        epsilon = callback.epsilon(delta)
    info = {"epsilon": epsilon, "delta": delta, "noise_multiplier": float(sigma),
            "sample_rate": sample_rate, "steps": float(callback.steps), "max_grad_norm": config.max_grad_norm}  # fmt: skip
    return model, info


@register_defense(DPSGD, "train")
def _dp_sgd(config: DPSGD, ctx: DefenseContext) -> nn.Module:
    model, info = dp_train(config, ctx)
    model_info(model).defense_info = info  # recorded with the checkpoint
    return model
