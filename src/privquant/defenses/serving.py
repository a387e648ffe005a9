"""Output-stage steps travel with the exported model, so what ships is what was audited.

An output step (coarse posteriors, HAMP's output modification) wraps the deployed model. Its
configs go to ``outputs.json`` and its own tensors (HAMP's posterior bank) to
``outputs.safetensors`` beside the export; every loader applies them again, and the ONNX graph
is exported from the wrapped model. Without this the audit credited a step no artifact held.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from privquant.artifacts.atomic import atomic_path, atomic_write_json
from privquant.errors import PrivquantError

OUTPUTS = "outputs.json"
OUTPUT_TENSORS = "outputs.safetensors"

# method -> rebuild(config dict, inner model, the wrapper's saved tensors) -> wrapper
Restorer = Callable[[dict[str, Any], nn.Module, dict[str, torch.Tensor]], nn.Module]
RESTORERS: dict[str, Restorer] = {}


def register_restorer(method: str, replace: bool = False) -> Callable[[Restorer], Restorer]:
    """How an output step's wrapper is rebuilt from its config and saved tensors."""

    def wrap(fn: Restorer) -> Restorer:
        if method in RESTORERS and not replace:
            raise PrivquantError(f"output step {method!r} already has a restorer")
        RESTORERS[method] = fn
        return fn

    return wrap


def _wrappers(served: nn.Module, n: int) -> list[nn.Module]:
    """The ``n`` output wrappers around the deployed model, innermost first."""
    chain, m = [], served
    for _ in range(n):
        if not hasattr(m, "model"):
            raise PrivquantError("an output step's module does not wrap the model as .model")
        chain.append(m)
        m = m.model
    return chain[::-1]


def save_output_stage(served: nn.Module, steps: Sequence[Any], folder: str | Path) -> None:
    """Record the output steps of ``served`` in ``folder`` (nothing when there are none)."""
    folder = Path(folder)
    for name in (OUTPUTS, OUTPUT_TENSORS):  # never leave an older export's output stage behind
        (folder / name).unlink(missing_ok=True)
    if not steps:
        return
    missing = [s.method for s in steps if s.method not in RESTORERS]
    if missing:
        raise PrivquantError(
            f"output steps {missing} cannot be saved with the model (no restorer registered);"
            " the export would release raw posteriors"
        )
    tensors = {}
    for i, wrapper in enumerate(_wrappers(served, len(steps))):
        for name, buf in wrapper.named_buffers(recurse=False):
            tensors[f"{i}.{name}"] = buf.detach().cpu().contiguous()
    if tensors:
        with atomic_path(folder / OUTPUT_TENSORS) as tmp:
            save_file(tensors, str(tmp))
    atomic_write_json(folder / OUTPUTS, {"steps": [s.model_dump(mode="json") for s in steps]})


def has_output_stage(folder: str | Path) -> bool:
    return (Path(folder) / OUTPUTS).is_file()


def apply_saved_outputs(model: nn.Module, folder: str | Path) -> nn.Module:
    """``model`` wrapped in the output steps saved in ``folder`` (unchanged if none)."""
    folder = Path(folder)
    if not has_output_stage(folder):
        return model
    try:
        steps = json.loads((folder / OUTPUTS).read_text())["steps"]
        tensors = (
            load_file(str(folder / OUTPUT_TENSORS)) if (folder / OUTPUT_TENSORS).is_file() else {}
        )
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PrivquantError(f"{folder / OUTPUTS}: cannot read the output stage ({e!r})") from None
    for i, step in enumerate(steps):
        method = step.get("method") if isinstance(step, dict) else None
        if method not in RESTORERS:
            raise PrivquantError(f"{folder / OUTPUTS}: steps[{i}]: unknown output step {method!r}")
        own = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.split(".", 1)[0] == str(i)}
        model = RESTORERS[method](step, model, own).eval()
    return model
