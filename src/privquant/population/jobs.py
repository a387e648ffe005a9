"""One model of a population as a job: a pure function of its inputs, cached by content hash.

:func:`train_one` is what every executor runs (the local loop here; a distributed engine
later), so a model trained anywhere is the same model, found under the same cache key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

import privquant
from privquant.artifacts import ArtifactCache, save_checkpoint
from privquant.data import Dataset
from privquant.defenses import DefenseConfig, DefenseContext, get_defense, train_model
from privquant.models import build_model, model_code
from privquant.training import TrainConfig, channel_stats


def model_factory(
    name: str, num_classes: int, options: dict[str, Any] | None = None
) -> Callable[[np.ndarray], nn.Module]:
    """Builds registered model ``name`` for inputs like ``x`` (normalization fitted on ``x``)."""
    options = dict(options or {})

    def build(x: np.ndarray) -> nn.Module:
        mean, std = channel_stats(x)
        return build_model(name, x.shape[1:], num_classes, mean=mean, std=std, **options)

    return build


@dataclass(frozen=True)
class TrainJob:
    """Train model ``index`` of a population on dataset rows ``members``.

    ``train.seed`` is this model's seed. ``defense`` is a train-stage defense (None: plain
    training). ``reference`` are the defender's rows, disjoint from the pool.
    """

    index: int
    members: np.ndarray
    train: TrainConfig
    model: str
    model_options: dict[str, Any] = field(default_factory=dict)
    defense: DefenseConfig | None = None
    reference: np.ndarray | None = None


def context_for(
    ds: Dataset,
    members: np.ndarray,
    reference: np.ndarray | None,
    train: TrainConfig,
    seed: int,
    model_fn: Callable[[np.ndarray], nn.Module],
    cache: ArtifactCache | None = None,
    identity: dict[str, Any] | None = None,
) -> DefenseContext:
    """The defense context of one model, built the same way for the target and every shadow."""
    has_ref = reference is not None and len(reference) > 0
    return DefenseContext(
        x=ds.x_train[members],
        y=ds.y_train[members],
        x_reference=ds.x_train[reference] if has_ref else None,
        y_reference=ds.y_train[reference] if has_ref else None,
        num_classes=ds.num_classes,
        train=train,
        seed=seed,
        model_fn=model_fn,
        cache=cache,
        identity=identity,
    )


def job_key(job: TrainJob, ds: Dataset, cache: ArtifactCache) -> str:
    parts: dict[str, Any] = dict(kind="trained_model", dataset=ds.checksum, model=job.model,
                                 options=job.model_options, train=job.train.model_dump(mode="json"),
                                 members=job.members)  # fmt: skip
    user_code = model_code(job.model)
    if user_code is not None:  # a plugin's model: its file is part of what the model depends on
        parts["model_code"] = user_code
    if job.defense is not None:  # plain models keep their key; each defense gets its own
        parts["defense"] = job.defense.model_dump(mode="json")
        parts["defense_code"] = get_defense(job.defense.method).code
        parts["reference"] = job.reference
    return cache.key(**parts)


def train_job_model(
    job: TrainJob,
    ds: Dataset,
    model_fn: Callable[[np.ndarray], nn.Module] | None = None,
    cache: ArtifactCache | None = None,
) -> nn.Module:
    """The trained model of ``job``, in memory (``model_fn`` overrides the registered model)."""
    identity = None
    if model_fn is None:  # a registered model: its name and options say what it is
        identity = {"dataset": ds.checksum, "model": job.model, "options": job.model_options}
    model_fn = model_fn or model_factory(job.model, ds.num_classes, job.model_options)
    ctx = context_for(
        ds, job.members, job.reference, job.train, job.train.seed, model_fn, cache, identity
    )
    return train_model(job.defense, ctx)


def train_one(job: TrainJob, ds: Dataset, cache: ArtifactCache) -> Path:
    """Train (or find in ``cache``) the model of ``job``; return its checkpoint folder."""

    def build(folder: Path) -> None:
        model = train_job_model(job, ds, cache=cache)
        meta = {"model": model.privquant_spec, "dataset": ds.name, "dataset_sha256": ds.checksum,
                "n_members": int(len(job.members)), "train": job.train.model_dump(mode="json"),
                "defense": None if job.defense is None else job.defense.model_dump(mode="json"),
                "defense_info": getattr(model, "privquant_defense_info", None),
                "privquant_version": privquant.__version__}  # fmt: skip
        save_checkpoint(folder, model, meta)

    return cache.get_or_create(job_key(job, ds, cache), build)
