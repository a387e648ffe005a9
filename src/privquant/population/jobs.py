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
from privquant.machine import training_device
from privquant.models import build_model, model_code
from privquant.models.info import model_info
from privquant.models.registry import fits_normalization
from privquant.training import TrainConfig, channel_stats
from privquant.training.device import resolve_device, seed_everything
from privquant.training.stacked import fit_stacked


def model_factory(
    name: str, num_classes: int, options: dict[str, Any] | None = None
) -> Callable[[np.ndarray], nn.Module]:
    """Builds registered model ``name`` for inputs like ``x`` (normalization fitted on ``x``)."""
    options = dict(options or {})

    def build(x: np.ndarray) -> nn.Module:
        mean, std = channel_stats(x) if fits_normalization(name) else (None, None)
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


def intermediates_identity(ds: Dataset, model: str, options: dict[str, Any]) -> dict[str, Any]:
    """What a defense's cached intermediates (sub-teachers) depend on besides their own recipe and
    rows: the data and a registered model. One identity, so a tune's points and a population's
    jobs find each other's sub-teachers."""
    return {"dataset": ds.checksum, "model": model, "options": options}


def train_job_model(
    job: TrainJob,
    ds: Dataset,
    model_fn: Callable[[np.ndarray], nn.Module] | None = None,
    cache: ArtifactCache | None = None,
) -> nn.Module:
    """The trained model of ``job``, in memory (``model_fn`` overrides the registered model)."""
    identity = None
    if model_fn is None:  # a registered model: its name and options say what it is
        identity = intermediates_identity(ds, job.model, job.model_options)
    model_fn = model_fn or model_factory(job.model, ds.num_classes, job.model_options)
    ctx = context_for(
        ds, job.members, job.reference, job.train, job.train.seed, model_fn, cache, identity
    )
    return train_model(job.defense, ctx)


def checkpoint_meta(job: TrainJob, ds: Dataset, model: nn.Module) -> dict[str, Any]:
    """What a population model's checkpoint records beside its weights."""
    return {"model": model_info(model).spec, "dataset": ds.name, "dataset_sha256": ds.checksum,
            "n_members": int(len(job.members)), "train": job.train.model_dump(mode="json"),
            "defense": None if job.defense is None else job.defense.model_dump(mode="json"),
            "defense_info": model_info(model).defense_info,
            "trained_on": training_device(resolve_device(job.train.device)),
            "privquant_version": privquant.__version__}  # fmt: skip


def train_one(job: TrainJob, ds: Dataset, cache: ArtifactCache) -> Path:
    """Train (or find in ``cache``) the model of ``job``; return its checkpoint folder."""

    def build(folder: Path) -> None:
        model = train_job_model(job, ds, cache=cache)
        save_checkpoint(folder, model, checkpoint_meta(job, ds, model))

    return cache.get_or_create(job_key(job, ds, cache), build)


def train_stacked(jobs: list[TrainJob], ds: Dataset, cache: ArtifactCache, stack: int,
                  progress: bool = True) -> int:  # fmt: skip
    """Train the plain models of ``jobs`` missing from ``cache`` ``stack`` at a time as one
    stacked network (:mod:`privquant.training.stacked`), each initialized from its own seed
    as :func:`train_one` would; returns how many it trained. The checkpoints land under the
    keys :func:`train_one` looks up, so the executor then finds every model cached."""
    missing = [j for j in jobs if j.defense is None and cache.get(job_key(j, ds, cache)) is None]
    trained = 0
    for start in range(0, len(missing), stack):
        chunk = missing[start : start + stack]
        if len(chunk) < 2:  # one model trains on the ordinary path
            continue
        models = []
        for job in chunk:
            seed_everything(job.train.seed)
            build = model_factory(job.model, ds.num_classes, job.model_options)
            models.append(build(ds.x_train[job.members]))
        fit_stacked(models, ds.x_train, ds.y_train, [j.members for j in chunk],
                    [j.train for j in chunk], progress=progress)  # fmt: skip
        for job, model in zip(chunk, models, strict=True):
            cache.get_or_create(
                job_key(job, ds, cache),
                lambda folder, job=job, model=model: save_checkpoint(
                    folder, model, checkpoint_meta(job, ds, model)
                ),
            )
        trained += len(chunk)
    return trained
