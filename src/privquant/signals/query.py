"""Querying models: the original input plus augmented views, always shaped [points, queries, classes]."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from privquant.signals.format import Signals
from privquant.signals.layout import CHANNELS_LAST, query_layout
from privquant.training import predict_logits
from privquant.training.augment import shift

View = Callable[[torch.Tensor], torch.Tensor]


MAX_QUERIES = 18
# Translations in units of the shift size: the 4 axis shifts first, then the 4 diagonals.
_OFFSETS = ((1, 0), (0, 1), (-1, 0), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1))


def query_views(kind: str, n_queries: int = 2, shift_size: int = 1) -> list[View]:
    """Augmented views queried besides the original input (LiRA's query augmentations).

    Images: the horizontal flip, then each translation by ``shift_size`` pixels (axis shifts,
    then diagonals) of the original and of the flip: up to 18 views in all, the flips x 3x3
    shifts of Carlini et al.'s code. Tables have no natural augmentation: one query.
    """
    if kind != "image" or n_queries <= 1:
        return []
    if not 1 <= n_queries <= MAX_QUERIES:
        raise ValueError(f"queries: {n_queries} is not in 1..{MAX_QUERIES}")
    views: list[View] = [lambda b: b.flip(3)]
    for dy, dx in _OFFSETS:
        dy, dx = dy * shift_size, dx * shift_size
        views.append(lambda b, dy=dy, dx=dx: shift(b, dy, dx))
        views.append(lambda b, dy=dy, dx=dx: shift(b.flip(3), dy, dx))
    return views[: n_queries - 1]


def query_logits(
    model: nn.Module, x: np.ndarray, views: Sequence[View] = (), layout: str | None = None
) -> np.ndarray:
    """float32 logits ``[N, 1 + len(views), classes]``: view 0 is the original input.

    ``layout``: ``nchw`` or ``channels_last``; None measures the faster one for this model here
    (:func:`privquant.signals.layout.query_layout`)."""
    layout = query_layout(model, x) if layout is None else layout
    out = predict_logits(model, x, views=views, channels_last=layout == CHANNELS_LAST)
    return out if out.ndim == 3 else out[:, None, :]


def collect_signals(
    models: Sequence[nn.Module | Path],
    x: np.ndarray,
    y: np.ndarray,
    keep: np.ndarray,
    views: Sequence[View] = (),
    progress: bool = True,
    noise_queries: int = 0,
    seed: int = 0,
) -> Signals:
    """Query every model on every point (original + ``views``) and package the signals.

    ``noise_queries`` > 0 also measures each model's :func:`noise_robustness` (for the
    label-only boundary attack), with seed ``seed + model index``.
    """
    from privquant.artifacts import load_checkpoint

    logits, robust = [], []
    for i, m in enumerate(tqdm(models, desc="query", unit="model", disable=not progress)):
        model = load_checkpoint(m)[0] if isinstance(m, (str, Path)) else m
        logits.append(query_logits(model, x, views))
        if noise_queries:
            robust.append(noise_robustness(model, x, y, noise_queries, seed=seed + i))
    extras = {"noise_robustness": np.stack(robust)} if robust else {}
    return Signals(np.stack(logits), y, keep, extras=extras)


NOISE_SIGMAS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32)  # in units of the input's [0, 1] range


@torch.no_grad()
def noise_robustness(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    n_noise: int,
    seed: int = 0,
    batch_size: int = 1024,
) -> np.ndarray:
    """Per point, the share of ``n_noise`` Gaussian-perturbed copies the model still labels
    correctly (Choquette-Choo et al. 2021's noise-robustness label-only attack).

    Members sit farther from the decision boundary, so they survive more noise. The noise
    scales cycle through :data:`NOISE_SIGMAS` (images in [0, 1] are clipped back to it; table
    features are perturbed in units of each feature's spread). Only predicted labels are used.
    """
    from privquant.training.trainer import to_model_input

    model = model.eval()
    gen = torch.Generator().manual_seed(seed)
    x_t, y_t = torch.as_tensor(x), torch.as_tensor(y)
    image = x_t.dim() == 4
    spread = None if image else to_model_input(x_t).std(0).clamp_min(1e-6)
    hits = torch.zeros(len(x_t))
    for s in range(0, len(x_t), batch_size):
        xb = to_model_input(x_t[s : s + batch_size])
        yb = y_t[s : s + batch_size]
        for k in range(n_noise):
            sigma = NOISE_SIGMAS[k % len(NOISE_SIGMAS)]
            noise = torch.randn(xb.shape, generator=gen) * sigma
            noisy = (xb + noise).clamp(0, 1) if image else xb + noise * spread
            hits[s : s + len(xb)] += (model(noisy).argmax(-1) == yb).float()
    return (hits / max(1, n_noise)).numpy()
