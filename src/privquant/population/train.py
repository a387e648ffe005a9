"""Train the models of an audit (each on its half of the pool), optionally under a train-stage defense."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from privquant.artifacts import ArtifactCache
from privquant.data import Dataset
from privquant.defenses import DefenseConfig
from privquant.membership import MembershipSplit
from privquant.population.executor import Executor, LocalExecutor
from privquant.population.jobs import TrainJob, train_one, train_stacked
from privquant.training import TrainConfig


def population_jobs(
    split: MembershipSplit,
    model: str,
    config: TrainConfig,
    model_options: dict[str, Any] | None = None,
    defense: DefenseConfig | None = None,
) -> list[TrainJob]:
    """One job per row of ``split.keep``; model ``m`` trains with seed ``config.seed + m``."""
    return [
        TrainJob(
            index=m,
            members=split.members(m),
            train=config.model_copy(update={"seed": config.seed + m}),
            model=model,
            model_options=dict(model_options or {}),
            defense=defense,
            reference=split.reference,
        )  # fmt: skip
        for m in range(split.n_models)
    ]


def train_population(
    ds: Dataset,
    split: MembershipSplit,
    model: str,
    config: TrainConfig,
    cache: ArtifactCache,
    model_options: dict[str, Any] | None = None,
    defense: DefenseConfig | None = None,
    executor: Executor | None = None,
    progress: bool = True,
    stack: int = 1,
) -> list[Path]:
    """Checkpoint folders of every model of the population, trained or found in ``cache``.

    Each model is cached under a hash of (dataset checksum, architecture, recipe, its member
    indices, training code and, for a defense, its config), so an interrupted run resumes with
    the models it already has. ``stack`` > 1 trains plain models that many at a time as one
    stacked network (the GPU path, :mod:`privquant.training.stacked`).
    """
    jobs = population_jobs(split, model, config, model_options, defense)
    if stack > 1 and defense is None:
        train_stacked(jobs, ds, cache, stack, progress=progress)
    desc = "models" if defense is None else f"models ({defense.method})"
    return (executor or LocalExecutor()).map(
        train_one, jobs, desc=desc, progress=progress, shared={"ds": ds, "cache": cache}
    )
