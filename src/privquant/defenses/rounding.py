"""Privacy-aware rounding (a post-training transform): each weight rounds up or down so the
quantized model fits non-members well and members no better than non-members.

AdaRound (Nagel et al. 2020) learns the rounding to reproduce the full-precision layers; here
the same soft relaxation is optimized for the whole network against a privacy objective on
data the defender holds: cross-entropy on the reference rows (utility on non-members) plus
``gap_weight`` times how far the members' loss sits below the reference rows' loss (the
signal a loss attack reads). No weight moves off its grid neighbours, so the model stays as
close to the trained one as any rounding can, with no retraining.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from privquant.defenses.base import DefenseConfig, DefenseContext, register_defense
from privquant.errors import ConfigError
from privquant.models.info import model_info
from privquant.quant import QuantConfig, calibration_batches, quant_layers, quantize
from privquant.quant.adaround import harden_rounding, init_rounding, rounding_penalty
from privquant.training import evaluate
from privquant.training.trainer import to_model_input


class PrivacyRounding(DefenseConfig):
    """Learned up/down rounding for utility on reference rows and no member/non-member loss gap."""

    method: Literal["privacy_rounding"] = "privacy_rounding"
    quant: QuantConfig = Field(description="bits, granularity, scales (rounding is learned here)")
    gap_weight: float = Field(
        1.0, ge=0, description="weight of the member-below-reference loss gap (0: utility only)"
    )
    iters: int = Field(500, ge=10, description="optimization steps over all layers at once")
    batch_size: int = Field(128, ge=8, description="rows of members and of reference per step")
    lr: float = Field(0.01, gt=0, description="Adam step on the soft rounding variables")
    reg_weight: float = Field(
        0.1, ge=0, description="weight of the push toward hard decisions (mean over weights)"
    )

    def reference_rows_needed(self) -> int:
        return 1


def privacy_rounding(
    qmodel: nn.Module,
    members: tuple[np.ndarray, np.ndarray],
    reference: tuple[np.ndarray, np.ndarray],
    config: PrivacyRounding,
    seed: int = 0,
) -> dict[str, float]:
    """Learn the rounding of every quantized layer of ``qmodel`` in place; returns what the
    objective measured at the start and the end (on the sampled batches)."""
    layers = list(quant_layers(qmodel).values())
    for p in qmodel.parameters():
        p.requires_grad_(False)
    alphas = [init_rounding(layer) for layer in layers]
    opt = torch.optim.Adam(alphas, lr=config.lr)
    gen = torch.Generator().manual_seed(seed)
    x_mem, y_mem = (torch.as_tensor(a) for a in members)
    x_ref, y_ref = (torch.as_tensor(a) for a in reference)
    warmup = int(0.2 * config.iters)
    qmodel.eval()  # BatchNorm is folded; nothing else may update statistics
    trace: dict[str, float] = {}
    for it in range(config.iters):
        i_ref = torch.randint(0, len(x_ref), (min(config.batch_size, len(x_ref)),), generator=gen)
        i_mem = torch.randint(0, len(x_mem), (min(config.batch_size, len(x_mem)),), generator=gen)
        ref_loss = F.cross_entropy(qmodel(to_model_input(x_ref[i_ref])), y_ref[i_ref].long())
        mem_loss = F.cross_entropy(qmodel(to_model_input(x_mem[i_mem])), y_mem[i_mem].long())
        gap = torch.relu(ref_loss - mem_loss)
        loss = ref_loss + config.gap_weight * gap
        if it >= warmup:  # anneal beta 20 -> 2: from free soft rounding to hard decisions
            beta = 20 - (20 - 2) * (it - warmup) / max(1, config.iters - warmup)
            penalty = torch.cat([rounding_penalty(a, beta).flatten() for a in alphas]).mean()
            loss = loss + config.reg_weight * penalty
        if it == 0:
            trace.update(start_reference_loss=ref_loss.item(), start_gap=gap.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    trace.update(end_reference_loss=ref_loss.item(), end_gap=gap.item())
    for layer in layers:
        harden_rounding(layer)
    for p in qmodel.parameters():
        p.requires_grad_(True)
    return trace


@register_defense(PrivacyRounding, "transform")
def _privacy_rounding(config: PrivacyRounding, model: nn.Module, ctx: DefenseContext) -> nn.Module:
    if ctx.x_reference is None or ctx.y_reference is None or len(ctx.x_reference) == 0:
        raise ConfigError(
            "privacy_rounding: needs defender reference rows (data.reference_size > 0)"
        )
    calib = calibration_batches(ctx.x, config.quant.calibration_batches, seed=ctx.seed)
    qmodel = quantize(model, config.quant.model_copy(update={"rounding": "nearest"}), calib)
    trace = privacy_rounding(
        qmodel, (ctx.x, ctx.y), (ctx.x_reference, ctx.y_reference), config, seed=ctx.seed
    )
    ref = evaluate(qmodel, ctx.x_reference, ctx.y_reference)
    model_info(qmodel).defense_info = {
        **trace,
        "reference_accuracy": ref["accuracy"],
    }
    return qmodel
