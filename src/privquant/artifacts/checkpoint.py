"""Model checkpoints as safetensors weights plus a JSON description (never pickle)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from privquant.artifacts.atomic import atomic_path, atomic_write_json
from privquant.errors import PrivquantError

WEIGHTS, META = "model.safetensors", "meta.json"


def save_checkpoint(
    folder: str | os.PathLike[str], model: torch.nn.Module, meta: dict[str, Any]
) -> Path:
    """Write ``model``'s state and ``meta`` (must be JSON-serializable) into ``folder``.

    ``meta["model"]`` should hold ``{"name": ..., "kwargs": ...}`` for models built by
    :func:`privquant.models.build_model` so the checkpoint can be rebuilt without code.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(folder / WEIGHTS) as tmp:
        save_file(state, str(tmp))
    atomic_write_json(folder / META, meta)
    return folder


def load_checkpoint(
    folder: str | os.PathLike[str], model: torch.nn.Module | None = None
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Load a checkpoint; rebuild the model from its meta unless ``model`` is given."""
    folder = Path(folder)
    for f in (WEIGHTS, META):
        if not (folder / f).is_file():
            raise PrivquantError(
                f"{folder / f}: missing; expected a checkpoint folder with {WEIGHTS} and {META}"
            )
    try:
        meta = json.loads((folder / META).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PrivquantError(f"{folder / META}: invalid JSON ({e})") from e
    if not isinstance(meta, dict):
        raise PrivquantError(f"{folder / META}: expected a JSON object, got {type(meta).__name__}")
    if model is None:
        from privquant.models import model_from_spec

        spec = meta.get("model")
        if not isinstance(spec, dict) or "name" not in spec:
            raise PrivquantError(
                f"{folder / META}: no 'model' entry with a 'name'; pass the model to load into"
            )
        model = model_from_spec(spec)
    try:
        state = load_file(str(folder / WEIGHTS))
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise PrivquantError(f"{folder / WEIGHTS}: cannot read safetensors file ({e})") from e
    model.load_state_dict(state)
    return model, meta
