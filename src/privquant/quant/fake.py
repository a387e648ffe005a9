"""Fake quantization: float tensors restricted to the values an integer grid can represent."""

from __future__ import annotations

import torch

from privquant.quant.config import TERNARY


def level_range(bits: float, symmetric: bool) -> tuple[int, int]:
    """Integer range [qmin, qmax] for a bit width. Ternary is {-1, 0, 1}."""
    if bits == TERNARY:
        return -1, 1
    b = int(bits)
    if symmetric:
        return -(2 ** (b - 1)), 2 ** (b - 1) - 1
    return 0, 2**b - 1


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round in the forward pass, identity gradient in the backward pass (straight-through)."""
    return x + (torch.round(x) - x).detach()


def quantize_int(
    w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, qmin: int, qmax: int
) -> torch.Tensor:
    """Integer codes (as float) of ``w``: clamp(round(w / scale) + zero)."""
    return torch.clamp(torch.round(w / scale) + zero, qmin, qmax)


def fake_quant(
    w: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    qmin: int,
    qmax: int,
    lsq: bool = False,
) -> torch.Tensor:
    """Quantize-dequantize with a straight-through gradient.

    With ``lsq`` the gradient also reaches ``scale`` (Esser et al. 2020), scaled by
    1/sqrt(numel * qmax) so the step size learns at the weights' pace.
    """
    if lsq:
        g = 1.0 / (w.numel() * max(qmax, 1)) ** 0.5
        scale = scale * g + (scale - scale * g).detach()
        q = torch.clamp(round_ste(w / scale) + zero, qmin, qmax)
        return (q - zero) * scale
    q = torch.clamp(round_ste(w / scale) + zero, qmin, qmax)
    return (q - zero) * scale


def _reshape(t: torch.Tensor, like: torch.Tensor, per_channel: bool) -> torch.Tensor:
    return t.view(-1, *([1] * (like.dim() - 1))) if per_channel else t.view(())


def weight_params(
    w: torch.Tensor,
    bits: float,
    symmetric: bool,
    per_channel: bool,
    method: str = "mse",
    percentile: float = 99.99,
    grid: int = 60,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point (shaped to broadcast against ``w``) from the weights themselves.

    minmax: the full range. percentile: range clipped at a percentile of |w| (or of w's two
    tails). mse: a grid search over clipping ratios minimizing the squared error per channel.
    """
    qmin, qmax = level_range(bits, symmetric)
    flat = w.detach().reshape(w.shape[0], -1) if per_channel else w.detach().reshape(1, -1)
    if method == "percentile":
        q = torch.tensor([1 - percentile / 100, percentile / 100], dtype=flat.dtype)
        lo, hi = torch.quantile(flat, q[0], dim=1), torch.quantile(flat, q[1], dim=1)
    else:
        lo, hi = flat.min(1).values, flat.max(1).values
    lo, hi = torch.minimum(lo, torch.zeros_like(lo)), torch.maximum(hi, torch.zeros_like(hi))

    def params(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if symmetric:
            amax = torch.maximum(-lo, hi)
            scale = amax / max(qmax, -qmin if bits == TERNARY else qmax)
            zero = torch.zeros_like(scale)
        else:
            scale = (hi - lo) / (qmax - qmin)
            zero = torch.round(qmin - lo / torch.clamp(scale, min=1e-12))
        return torch.clamp(scale, min=1e-12), zero

    scale, zero = params(lo, hi)
    if method == "mse":
        best_err = torch.full_like(scale, float("inf"))
        for ratio in torch.linspace(1.0, 0.2, grid):
            s, z = params(lo * ratio, hi * ratio)
            deq = (quantize_int(flat, s[:, None], z[:, None], qmin, qmax) - z[:, None]) * s[:, None]
            err = ((deq - flat) ** 2).sum(1)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            scale, zero = torch.where(better, s, scale), torch.where(better, z, zero)
    return _reshape(scale, w, per_channel), _reshape(zero, w, per_channel)


def act_params(lo: float, hi: float, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Unsigned per-tensor activation grid covering [lo, hi] (always including 0)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    qmin, qmax = level_range(bits, symmetric=False)
    scale = max((hi - lo) / (qmax - qmin), 1e-8)
    zero = float(round(qmin - lo / scale))
    return torch.tensor(scale), torch.tensor(zero)
