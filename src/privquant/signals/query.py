"""Querying models: the original input plus augmented views, always shaped [points, queries, classes]."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from privquant.signals.format import Signals
from privquant.training import predict_logits
from privquant.training.augment import shift

View = Callable[[torch.Tensor], torch.Tensor]


def query_views(kind: str, n_queries: int = 2) -> list[View]:
    """Augmented views queried besides the original input (LiRA's query augmentations).

    Images: horizontal flip, then 1-pixel shifts of the original and of the flip. Tables have
    no natural augmentation, so they are queried once.
    """
    if kind != "image" or n_queries <= 1:
        return []
    views: list[View] = [lambda b: b.flip(3)]
    for dy, dx in ((1, 0), (0, 1), (-1, 0), (0, -1)):
        views.append(lambda b, dy=dy, dx=dx: shift(b, dy, dx))
        views.append(lambda b, dy=dy, dx=dx: shift(b.flip(3), dy, dx))
    return views[: n_queries - 1]


def query_logits(model: nn.Module, x: np.ndarray, views: Sequence[View] = ()) -> np.ndarray:
    """float32 logits ``[N, 1 + len(views), classes]``: view 0 is the original input."""
    out = predict_logits(model, x, views=views)
    return out if out.ndim == 3 else out[:, None, :]


def collect_signals(
    models: Sequence[nn.Module | Path],
    x: np.ndarray,
    y: np.ndarray,
    keep: np.ndarray,
    views: Sequence[View] = (),
    progress: bool = True,
) -> Signals:
    """Query every model on every point (original + ``views``) and package the signals."""
    from privquant.artifacts import load_checkpoint

    logits = []
    for m in tqdm(models, desc="query", unit="model", disable=not progress):
        model = load_checkpoint(m)[0] if isinstance(m, (str, Path)) else m
        logits.append(query_logits(model, x, views))
    return Signals(np.stack(logits), y, keep)
