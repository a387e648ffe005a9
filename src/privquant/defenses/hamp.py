"""HAMP (Chen & Pattabiraman, NDSS 2024): less confident training plus output modification.

- ``hamp`` (train stage): soft labels of high entropy and an entropy regularizer
  (:class:`privquant.training.HighEntropyLabels`).
- ``hamp_output`` (output stage): every released posterior is the posterior of a random
  input, re-ordered so its classes rank as the real prediction's do. The predicted class (and
  the whole ranking) is kept; the confidence values carry nothing about the query.

Written from the paper's description; the random input for a query is chosen by a hash of the
query, so the same query always gets the same answer (repeating it averages nothing away).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from privquant.defenses.base import DefenseConfig, DefenseContext, register_defense
from privquant.defenses.serving import register_restorer
from privquant.training import HighEntropyLabels
from privquant.training.trainer import to_model_input


class HAMP(DefenseConfig):
    """HAMP training: high-entropy soft labels and an entropy regularizer."""

    method: Literal["hamp"] = "hamp"
    entropy_fraction: float = Field(
        0.9, gt=0, lt=1, description="entropy of the soft labels, as a share of log(classes)"
    )
    alpha: float = Field(0.01, ge=0, description="weight of the prediction-entropy regularizer")


class HAMPOutput(DefenseConfig):
    """HAMP output modification: release a random input's posterior in the query's class order."""

    method: Literal["hamp_output"] = "hamp_output"
    random_inputs: int = Field(1000, ge=1, le=100_000, description="size of the random-input bank")


@register_defense(HAMP, "train")
def _hamp(config: HAMP, ctx: DefenseContext) -> nn.Module:
    objective = HighEntropyLabels(ctx.num_classes, config.entropy_fraction, config.alpha)
    return ctx.train_fresh(objective=objective)


def _random_inputs(x: np.ndarray, n: int, seed: int) -> torch.Tensor:
    """Uniform random inputs in the members' domain: any byte for images, the range of each
    feature for tables."""
    gen = np.random.default_rng(seed)
    if x.dtype == np.uint8:
        return torch.from_numpy(gen.integers(0, 256, (n, *x.shape[1:]), dtype=np.uint8))
    lo, hi = x.min(axis=0), x.max(axis=0)
    return torch.from_numpy(gen.uniform(lo, hi, (n, *x.shape[1:])).astype(np.float32))


class RankPreservingRandomPosterior(nn.Module):
    """Wraps a model; outputs the log of a bank posterior, re-ordered by the query's ranking."""

    def __init__(self, model: nn.Module, bank_inputs: torch.Tensor, seed: int) -> None:
        super().__init__()
        self.model = model
        with torch.no_grad():
            p = model(to_model_input(bank_inputs)).float().softmax(-1)
        # Descending posterior values; a tiny margin keeps the top value strictly first.
        values = p.sort(-1, descending=True).values
        values[:, 0] += 1e-6
        self.register_buffer("bank", values / values.sum(-1, keepdim=True))
        dim = int(np.prod(bank_inputs.shape[1:]))
        weights = np.random.default_rng(seed + 1).integers(1, 2**20, dim)
        self.register_buffer("hash_weights", torch.from_numpy(weights))

    @classmethod
    def from_tensors(cls, model: nn.Module, bank: torch.Tensor, hash_weights: torch.Tensor):  # noqa: ANN206
        """The wrapper as saved with an export (no bank inputs to run again)."""
        self = cls.__new__(cls)
        nn.Module.__init__(self)
        self.model = model
        self.register_buffer("bank", bank.float())
        self.register_buffer("hash_weights", hash_weights.long())
        return self

    def _pick(self, x: torch.Tensor) -> torch.Tensor:
        codes = (x.detach().flatten(1) * 255).round().long()  # images: the bytes themselves
        return (codes @ self.hash_weights) % len(self.bank)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.model(x).float()
        order = p.argsort(-1, descending=True)
        out = torch.empty_like(p).scatter_(-1, order, self.bank[self._pick(x)].to(p.dtype))
        return out.clamp_min(1e-12).log()


@register_defense(HAMPOutput, "output")
def _hamp_output(config: HAMPOutput, model: nn.Module, ctx: DefenseContext) -> nn.Module:
    bank = _random_inputs(ctx.x, config.random_inputs, ctx.seed)
    return RankPreservingRandomPosterior(model.eval(), bank, ctx.seed).eval()


@register_restorer("hamp_output")
def _restore_hamp_output(
    config: dict, model: nn.Module, tensors: dict[str, torch.Tensor]
) -> nn.Module:
    if {"bank", "hash_weights"} - tensors.keys():
        raise ValueError("hamp_output: the export lacks its posterior bank")
    return RankPreservingRandomPosterior.from_tensors(
        model, tensors["bank"], tensors["hash_weights"]
    )
