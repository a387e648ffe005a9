"""Augmentations on whole batches of tensors (no per-image Python loop, no torchvision).

The random draws (:func:`augment_draws`) are separate from applying them (:func:`apply_augment`)
so that the stacked trainer can draw each model's augmentation from that model's own generator,
exactly as the one-model trainer does, and then apply every model's in one vectorized call.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class AugmentDraws:
    """Per-image random choices: crop offsets (or None without a crop) and flips (or None)."""

    dy: torch.Tensor | None = None
    dx: torch.Tensor | None = None
    flip: torch.Tensor | None = None


def augment_draws(n: int, mode: str, padding: int, gen: torch.Generator) -> AugmentDraws:
    """The random choices for ``n`` images, drawn from ``gen`` in a fixed order (crop, flip)."""
    dy = dx = flip = None
    if "crop" in mode and padding > 0:
        dy = torch.randint(0, 2 * padding + 1, (n,), generator=gen, device="cpu")
        dx = torch.randint(0, 2 * padding + 1, (n,), generator=gen, device="cpu")
    if "flip" in mode:
        flip = torch.rand(n, generator=gen, device="cpu") < 0.5
    return AugmentDraws(dy, dx, flip)


def identity_draws(n: int, mode: str, padding: int) -> AugmentDraws:
    """Draws that leave ``n`` images unchanged (centre crop, no flip), drawing nothing."""
    dy = dx = flip = None
    if "crop" in mode and padding > 0:
        dy = dx = torch.full((n,), padding, dtype=torch.long)
    if "flip" in mode:
        flip = torch.zeros(n, dtype=torch.bool)
    return AugmentDraws(dy, dx, flip)


def take_draws(draws: AugmentDraws, index: torch.Tensor) -> AugmentDraws:
    """The draws of the images ``index`` selects (repeats allowed)."""
    return AugmentDraws(
        *(None if t is None else t[index] for t in (draws.dy, draws.dx, draws.flip))
    )


def concat_draws(draws: list[AugmentDraws]) -> AugmentDraws:
    """The draws of several batches, in order, as the draws of their concatenation."""

    def cat(name: str) -> torch.Tensor | None:
        parts = [getattr(d, name) for d in draws]
        return None if parts[0] is None else torch.cat(parts)  # type: ignore[arg-type]

    return AugmentDraws(cat("dy"), cat("dx"), cat("flip"))


def _crop(x: torch.Tensor, padding: int, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    dy, dx = dy.to(x.device), dx.to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device)[None])[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device)[None])[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, chan, rows, cols]


def apply_augment(x: torch.Tensor, padding: int, draws: AugmentDraws) -> torch.Tensor:
    """Apply ``draws`` to a batch of images ``[N, C, H, W]`` (zero-padded crop, then flip)."""
    if draws.dy is not None and draws.dx is not None:
        x = _crop(x, padding, draws.dy, draws.dx)
    if draws.flip is not None:
        x = torch.where(draws.flip.to(x.device).view(-1, 1, 1, 1), x.flip(3), x)
    return x


def random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Flip each image horizontally with probability 1/2."""
    return apply_augment(x, 0, augment_draws(x.shape[0], "flip", 0, gen))


def random_crop(x: torch.Tensor, padding: int, gen: torch.Generator) -> torch.Tensor:
    """Zero-pad by ``padding`` and take a random crop of the original size per image."""
    return apply_augment(x, padding, augment_draws(x.shape[0], "crop", padding, gen))


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
    return apply_augment(x, padding, augment_draws(x.shape[0], mode, padding, gen))
