"""Train the K+1 models of an audit (each on its half of the pool) and query them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

import privquant
from privquant.artifacts import ArtifactCache, load_checkpoint, save_checkpoint
from privquant.attacks.signals import Signals
from privquant.data import Dataset
from privquant.membership import MembershipSplit
from privquant.training import TrainConfig, predict_logits, train_new_model
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


def _model_key(cache: ArtifactCache, ds: Dataset, model_name: str, options: dict[str, Any], cfg: TrainConfig,
               members: np.ndarray) -> str:  # fmt: skip
    return cache.key(kind="trained_model", dataset=ds.checksum, model=model_name, options=options,
                     train=cfg.model_dump(mode="json"), members=members)  # fmt: skip


def train_population(
    ds: Dataset,
    split: MembershipSplit,
    model_name: str,
    config: TrainConfig,
    cache: ArtifactCache,
    model_options: dict[str, Any] | None = None,
    progress: bool = True,
) -> list[Path]:
    """Train one model per row of ``split.keep`` (model m with seed ``config.seed + m``).

    Each model is cached under a hash of (dataset checksum, architecture, recipe, its member
    indices, training code), so an interrupted run resumes with the models it already has.
    """
    model_options = model_options or {}
    paths = []
    bar = tqdm(range(split.n_models), desc="models", unit="model", disable=not progress)
    for m in bar:
        members = split.members(m)
        cfg = config.model_copy(update={"seed": config.seed + m})
        key = _model_key(cache, ds, model_name, model_options, cfg, members)

        def build(folder: Path, members: np.ndarray = members, cfg: TrainConfig = cfg) -> None:
            model, result = train_new_model(model_name, ds.x_train[members], ds.y_train[members],
                                            ds.num_classes, cfg, progress=False, **model_options)  # fmt: skip
            meta = {"model": model.privquant_spec, "train": result.to_dict(), "dataset": ds.name,
                    "dataset_sha256": ds.checksum, "n_members": int(len(members)),
                    "privquant_version": privquant.__version__}  # fmt: skip
            save_checkpoint(folder, model, meta)

        cached = cache.get(key) is not None
        paths.append(cache.get_or_create(key, build))
        bar.set_postfix(model=m, cached=cached)
    return paths


def collect_signals(
    models: Sequence[nn.Module | Path],
    x: np.ndarray,
    y: np.ndarray,
    keep: np.ndarray,
    views: Sequence[View] = (),
    progress: bool = True,
) -> Signals:
    """Query every model on every point (original + ``views``) and package the signals."""
    logits = []
    for m in tqdm(models, desc="query", unit="model", disable=not progress):
        model = load_checkpoint(m)[0] if isinstance(m, (str, Path)) else m
        out = predict_logits(model, x, views=views)
        logits.append(out if out.ndim == 3 else out[:, None, :])
    return Signals(np.stack(logits), y, keep)
