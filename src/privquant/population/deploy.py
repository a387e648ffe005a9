"""Deploy one trained model: apply a variant's transform steps, cache the result, load it back.

Quantized results are cached as integer exports and what is attacked is the model loaded back
from those integers, so the audit measures exactly what would ship.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from privquant.artifacts import ArtifactCache, atomic_write_json, load_checkpoint, save_checkpoint
from privquant.data import Dataset
from privquant.defenses import DefenseConfig, apply_transforms, get_defense
from privquant.models.info import model_info
from privquant.population.jobs import context_for, model_factory
from privquant.quant import export_quantized, load_quantized, quant_layers
from privquant.quant.export import MANIFEST, fp32_size
from privquant.training import TrainConfig

DEFENSE_INFO = "defense_info.json"


def deployed_defense_info(folder: Path) -> dict[str, float] | None:
    """What the transforms of a deployed model recorded, or None."""
    f = folder / DEFENSE_INFO
    return json.loads(f.read_text()) if f.is_file() else None


@dataclass(frozen=True)
class DeployJob:
    """Apply ``transforms`` to the trained model in ``checkpoint`` (model ``index``).

    ``checkpoint`` is None for in-memory use (:func:`deploy_model`), e.g. a user's own model.
    """

    index: int
    checkpoint: Path | None
    members: np.ndarray
    train: TrainConfig
    seed: int
    model: str
    model_options: dict[str, Any] = field(default_factory=dict)
    transforms: tuple[DefenseConfig, ...] = ()
    reference: np.ndarray | None = None


def deploy_key(job: DeployJob, cache: ArtifactCache) -> str:
    return cache.key(kind="deployed", base=job.checkpoint.name,
                     steps=[s.model_dump(mode="json") for s in job.transforms],
                     steps_code=[get_defense(s.method).code for s in job.transforms],
                     reference=job.reference, seed=job.seed)  # fmt: skip


def deploy_model(
    job: DeployJob,
    model: nn.Module,
    ds: Dataset,
    model_fn: Callable[[np.ndarray], nn.Module] | None = None,
    cache: ArtifactCache | None = None,
) -> nn.Module:
    """``model`` after the transforms of ``job``, in memory (the input is not modified)."""
    model_fn = model_fn or model_factory(job.model, ds.num_classes, job.model_options)
    ctx = context_for(ds, job.members, job.reference, job.train, job.seed, model_fn, cache)
    return apply_transforms(list(job.transforms), copy.deepcopy(model), ctx)


def deploy_one(job: DeployJob, ds: Dataset, cache: ArtifactCache) -> Path:
    """Folder of the deployed model (the trained checkpoint itself when there is no transform)."""
    if job.checkpoint is None:
        raise ValueError("deploy_one needs a checkpoint folder; use deploy_model in memory")
    if not job.transforms:
        return job.checkpoint

    def build(folder: Path) -> None:
        model, meta = load_checkpoint(job.checkpoint)
        deployed = deploy_model(job, model, ds, cache=cache)
        model_info(deployed).spec = meta["model"]
        if quant_layers(deployed):
            export_quantized(deployed, folder)
        else:  # a full-precision transform (e.g. a fine-tune): a plain checkpoint
            save_checkpoint(folder, deployed, {"model": meta["model"], "base": job.checkpoint.name})
        atomic_write_json(
            folder / "steps.json", [s.model_dump(mode="json") for s in job.transforms]
        )
        info = model_info(deployed).defense_info
        if info:  # what a transform measured or chose (e.g. the calibration's audit)
            atomic_write_json(folder / DEFENSE_INFO, info)

    return cache.get_or_create(deploy_key(job, cache), build)


def load_deployed(folder: Path) -> tuple[nn.Module, dict[str, Any]]:
    """The deployed model in ``folder`` and its exact size accounting."""
    if (folder / MANIFEST).is_file():
        model, manifest = load_quantized(folder)
        return model, manifest["size"]
    model, _ = load_checkpoint(folder)
    return model, fp32_size(model)


def bits_label(size: dict[str, Any]) -> float:
    bits = size.get("avg_bits_per_quantized_weight", 32.0)
    return float(bits) if math.isfinite(bits) else 32.0
