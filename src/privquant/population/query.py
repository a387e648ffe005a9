"""Query one model of a population under a variant: a pure job, run by any executor.

Deploys the trained checkpoint (transforms, cached), wraps its outputs (output-stage steps)
and returns everything the attacks and the report need from this model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from privquant.artifacts import ArtifactCache
from privquant.artifacts.checkpoint import META
from privquant.data import Dataset
from privquant.defenses import DefenseConfig, apply_outputs
from privquant.population.deploy import (
    DeployJob,
    bits_label,
    deploy_one,
    deployed_defense_info,
    load_deployed,
)
from privquant.population.jobs import context_for, model_factory
from privquant.signals import noise_robustness, query_logits, query_views
from privquant.signals.layout import CHANNELS_LAST, query_layout
from privquant.training import evaluate


@dataclass(frozen=True)
class QueryJob:
    """Model ``deploy.index`` under a variant, queried on the pool (and population rows)."""

    deploy: DeployJob
    outputs: tuple[DefenseConfig, ...]
    pool: np.ndarray
    population: np.ndarray
    test: np.ndarray | None  # test rows to score accuracy on (targets only), else None
    queries: int = 1
    query_shift: int = 1
    noise_queries: int = 0
    population_part: str = "train"  # which dataset part ``population`` indexes


def query_one(job: QueryJob, ds: Dataset, cache: ArtifactCache) -> dict[str, Any]:
    """Logits ``[pool, queries, classes]`` (+ population rows, noise robustness) and a record."""
    d = job.deploy
    deployed = deploy_one(d, ds, cache)
    model, size = load_deployed(deployed)
    if job.outputs:
        model_fn = model_factory(d.model, ds.num_classes, d.model_options)
        ctx = context_for(ds, d.members, d.reference, d.train, d.seed, model_fn, cache)
        model = apply_outputs(list(job.outputs), model, ctx)
    views = query_views(ds.kind, job.queries, job.query_shift)
    x_pool, y_pool = ds.x_train[job.pool], ds.y_train[job.pool]
    layout = query_layout(model, x_pool)  # pool and population rows alike
    logits = query_logits(model, x_pool, views, layout)
    population = (
        query_logits(
            model,
            (ds.x_test if job.population_part == "test" else ds.x_train)[job.population],
            views,
            layout,
        )
        if len(job.population)
        else None
    )
    robustness = (noise_robustness(model, x_pool, y_pool, job.noise_queries, seed=d.seed)
                  if job.noise_queries else None)  # fmt: skip
    member = np.isin(job.pool, d.members)
    trained = json.loads((d.checkpoint / META).read_text()) if d.checkpoint is not None else {}
    # Test accuracy is scored for targets only; scoring every shadow would double query time.
    scored = job.test is not None and len(job.test) > 0
    test_accuracy = (evaluate(model, ds.x_test[job.test], ds.y_test[job.test],
                              channels_last=layout == CHANNELS_LAST)["accuracy"] if scored else None)  # fmt: skip
    record = {
        "test_accuracy": test_accuracy,
        "train_accuracy": float((logits[member, 0].argmax(-1) == y_pool[member]).mean()),
        "size_bytes": int(size["total_bytes"]),
        "bits": bits_label(size),
        "defense_info": ({**(trained.get("defense_info") or {}), **(deployed_defense_info(deployed) or {})}
                         or None),
        "trained_on": trained.get("trained_on"),
        "query_layout": layout,
    }  # fmt: skip
    return {"logits": logits, "population": population, "robustness": robustness, "record": record}
