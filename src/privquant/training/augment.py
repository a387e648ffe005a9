"""Augmentations on whole batches of tensors (no per-image Python loop, no torchvision)."""

from __future__ import annotations

import torch


def random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Flip each image horizontally with probability 1/2."""
    flip = torch.rand(x.shape[0], generator=gen, device="cpu").to(x.device) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)


def random_crop(x: torch.Tensor, padding: int, gen: torch.Generator) -> torch.Tensor:
    """Zero-pad by ``padding`` and take a random crop of the original size per image."""
    if padding == 0:
        return x
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=gen, device="cpu").to(x.device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=gen, device="cpu").to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device)[None])[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device)[None])[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, chan, rows, cols]


def shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Deterministic translation with zero fill (query augmentations for LiRA)."""
    if dy == 0 and dx == 0:
        return x
    p = max(abs(dy), abs(dx))
    padded = torch.nn.functional.pad(x, (p,) * 4)
    h, w = x.shape[2:]
    return padded[:, :, p + dy : p + dy + h, p + dx : p + dx + w]


def augment_batch(x: torch.Tensor, mode: str, padding: int, gen: torch.Generator) -> torch.Tensor:
    if x.dim() != 4 or mode == "none":
        return x
    if "crop" in mode:
        x = random_crop(x, padding, gen)
    if "flip" in mode:
        x = random_flip(x, gen)
    return x
