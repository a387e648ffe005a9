"""Learned rounding (AdaRound, Nagel et al. 2020): each weight rounds up or down as optimized.

Layer by layer, soft rounding variables are fitted so the quantized layer reproduces the
full-precision layer's output on calibration data, with a regularizer annealed to force every
variable to a hard 0/1 decision. The reconstruction loss is a parameter, because the MIA
defense later swaps in a privacy-aware objective.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from privquant.quant.modules import QuantLayer

ReconLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _collect_inputs(
    model: nn.Module, module_name: str, batches: list[torch.Tensor]
) -> torch.Tensor:
    module = model.get_submodule(module_name)
    seen: list[torch.Tensor] = []
    hook = module.register_forward_pre_hook(lambda m, inp: seen.append(inp[0].detach()))
    with torch.no_grad():
        for xb in batches:
            model(xb)
    hook.remove()
    return torch.cat(seen)


def _rectified_sigmoid(alpha: torch.Tensor) -> torch.Tensor:
    return torch.clamp(torch.sigmoid(alpha) * 1.2 - 0.1, 0, 1)


def adaround(
    qmodel: nn.Module,
    model_fp: nn.Module,
    batches: list[torch.Tensor],
    iters: int = 300,
    batch_size: int = 32,
    reg_weight: float = 0.01,
    lr: float = 1e-2,
    recon_loss: ReconLoss | None = None,
    seed: int = 0,
) -> None:
    """Optimize the rounding of every :class:`QuantLayer` of ``qmodel`` in place.

    ``model_fp`` must have the same module names as ``qmodel`` with plain layers (the folded,
    unquantized model). The quantized layer sees inputs produced by the already-rounded layers
    before it; its target is the full-precision layer's output on full-precision inputs.
    """
    recon_loss = recon_loss or (lambda out, target: ((out - target) ** 2).sum(1).mean())
    gen = torch.Generator().manual_seed(seed)
    for name, layer in [(n, m) for n, m in qmodel.named_modules() if isinstance(m, QuantLayer)]:
        x_q = _collect_inputs(qmodel, name, batches)
        fp_layer = model_fp.get_submodule(name)
        fp_layer = fp_layer.layer if isinstance(fp_layer, QuantLayer) else fp_layer
        with torch.no_grad():
            target = fp_layer(_collect_inputs(model_fp, name, batches))
        init_rounding(layer)
        opt = torch.optim.Adam([layer.alpha], lr=lr)
        warmup = int(0.2 * iters)
        for it in range(iters):
            idx = torch.randint(0, len(x_q), (min(batch_size, len(x_q)),), generator=gen)
            out = layer(x_q[idx])
            loss = recon_loss(out.flatten(1), target[idx].flatten(1))
            if it >= warmup:  # anneal beta 20 -> 2: from free soft rounding to hard decisions
                beta = 20 - (20 - 2) * (it - warmup) / max(1, iters - warmup)
                loss = loss + reg_weight * rounding_penalty(layer.alpha, beta).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        harden_rounding(layer)


def init_rounding(layer: QuantLayer) -> nn.Parameter:
    """Soft rounding variables for ``layer``, starting where its soft rounding equals the
    weights' fractional parts (so optimization starts from the unrounded weights)."""
    w = layer.layer.weight.detach()
    frac = (w / layer.scale - torch.floor(w / layer.scale)).clamp(0.01, 0.99)
    layer.alpha = nn.Parameter(-torch.log(1.2 / (frac + 0.1) - 1))
    return layer.alpha


def rounding_penalty(alpha: torch.Tensor, beta: float) -> torch.Tensor:
    """Per-variable regularizer that is 0 at a hard up/down decision (annealed via beta)."""
    return 1 - (2 * _rectified_sigmoid(alpha) - 1).abs().pow(beta)


def harden_rounding(layer: QuantLayer) -> None:
    """Write the hard rounding decisions into the weights (on the grid, so nearest rounding
    reproduces them) and drop the soft variables."""
    assert layer.alpha is not None
    with torch.no_grad():
        w = layer.layer.weight
        hard = (layer.alpha >= 0).float()
        q = torch.clamp(torch.floor(w / layer.scale) + hard + layer.zero, layer.qmin, layer.qmax)
        w.copy_((q - layer.zero) * layer.scale)
    layer.alpha = None
