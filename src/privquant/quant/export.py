"""Integer export: bit-packed weights + scales in safetensors, a JSON manifest, exact sizes.

Loading an export rebuilds a model whose outputs equal the fake-quant model's.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load_file, save_file
from torch import nn

import privquant
from privquant.artifacts.atomic import atomic_path, atomic_write_json
from privquant.errors import PrivquantError
from privquant.models.info import model_info
from privquant.quant.apply import fold_batchnorm, quant_layers
from privquant.quant.config import TERNARY
from privquant.quant.fake import quantize_int
from privquant.quant.modules import QuantLayer

TENSORS, MANIFEST = "quantized.safetensors", "manifest.json"


def storage_bits(bits: float) -> int:
    """Bits each weight occupies when packed (ternary values need 2)."""
    return 2 if bits == TERNARY else int(bits)


def pack(codes: np.ndarray, nbits: int) -> np.ndarray:
    """Pack unsigned integers < 2**nbits into a little-endian bit stream of uint8."""
    codes = codes.astype(np.uint8).ravel()
    bits = np.unpackbits(codes[:, None], axis=1, bitorder="little")[:, :nbits]
    return np.packbits(bits.ravel(), bitorder="little")


def unpack(packed: np.ndarray, nbits: int, count: int) -> np.ndarray:
    bits = np.unpackbits(packed, bitorder="little")[: count * nbits].reshape(count, nbits)
    return np.packbits(np.pad(bits, ((0, 0), (0, 8 - nbits))), axis=1, bitorder="little")[:, 0]


def _layer_codes(layer: QuantLayer) -> np.ndarray:
    with torch.no_grad():
        q = quantize_int(layer.layer.weight, layer.scale, layer.zero, layer.qmin, layer.qmax)
    return (q - layer.qmin).to(torch.int64).numpy()  # shifted to 0..2^b-1 for packing


def export_quantized(model: nn.Module, folder: str | os.PathLike[str]) -> dict[str, Any]:
    """Write ``model`` (from :func:`privquant.quant.quantize`) as integers; return the manifest."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    layers = quant_layers(model)
    if not layers:
        raise PrivquantError("export_quantized: the model has no quantized layers")
    tensors: dict[str, np.ndarray] = {}
    table: dict[str, Any] = {}
    quant_weight_keys = {f"{n}.layer.weight" for n in layers}
    for name, layer in layers.items():
        nb = storage_bits(layer.bits)
        codes = _layer_codes(layer)
        tensors[f"{name}.qweight"] = pack(codes, nb)
        tensors[f"{name}.scale"] = layer.scale.detach().float().reshape(-1).numpy()
        tensors[f"{name}.zero"] = layer.zero.detach().float().reshape(-1).numpy()
        table[name] = {
            "bits": layer.bits,
            "storage_bits": nb,
            "shape": list(layer.layer.weight.shape),
            "qmin": layer.qmin,
            "qmax": layer.qmax,
            "symmetric": layer.symmetric,
            "per_channel": layer.per_channel,
            "act_bits": layer.act_bits if layer.act_enabled else None,
            "packed_bytes": int(tensors[f"{name}.qweight"].nbytes),
        }
    float_bytes = 0
    for key, value in model.state_dict().items():
        if (
            key in quant_weight_keys
            or key.endswith((".scale", ".zero"))
            and key.rsplit(".", 1)[0] in layers
        ):
            continue
        arr = (
            value.detach().float().numpy() if value.is_floating_point() else value.detach().numpy()
        )
        tensors[f"float.{key}"] = np.ascontiguousarray(arr)
        float_bytes += arr.nbytes if not key.endswith(("act_scale", "act_zero")) else 0
    n_weights = sum(math.prod(t["shape"]) for t in table.values())
    packed = sum(t["packed_bytes"] for t in table.values())
    scale_bytes = sum(tensors[f"{n}.scale"].nbytes + (0 if layers[n].symmetric else tensors[f"{n}.zero"].nbytes)
                      for n in layers)  # fmt: skip
    quant_info = model_info(model).quant or {}
    manifest = {
        "format": "privquant-int/1",
        "privquant_version": privquant.__version__,
        "model": model_info(model).spec,
        "bn_folded": quant_info.get("bn_folded", True),
        "quant_config": quant_info.get("config"),
        "layers": table,
        "size": {
            "quantized_weights": n_weights,
            "packed_weight_bytes": packed,
            "scale_bytes": scale_bytes,
            "float_bytes": float_bytes,
            "total_bytes": packed + scale_bytes + float_bytes,
            "avg_bits_per_quantized_weight": 8 * packed / max(1, n_weights),
            "avg_bits_per_parameter": 8
            * (packed + scale_bytes + float_bytes)
            / max(1, n_weights + float_bytes // 4),
            "fp32_bytes": 4 * (n_weights + float_bytes // 4),
        },
    }
    with atomic_path(folder / TENSORS) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "privquant-int/1"})
    atomic_write_json(folder / MANIFEST, manifest)
    return manifest


def load_quantized(
    folder: str | os.PathLike[str], model: nn.Module | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the fake-quant model from an export (weights are decoded from the integers).

    ``model``: a fresh instance of the architecture, for a model privquant's registry does not
    know (a user's own ``nn.Module``); its quantized layers are replaced in place."""
    from privquant.models import model_from_spec

    folder = Path(folder)
    for f in (TENSORS, MANIFEST):
        if not (folder / f).is_file():
            raise PrivquantError(
                f"{folder / f}: missing; expected an export folder with {TENSORS} and {MANIFEST}"
            )
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise PrivquantError(
            f"{folder / MANIFEST}: not valid JSON ({e}); re-export the model"
        ) from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("layers", {}), dict):
        raise PrivquantError(
            f"{folder / MANIFEST}: expected a JSON object with 'model' and 'layers'"
        )
    spec = manifest.get("model")
    if model is None and not spec:
        raise PrivquantError(
            f"{folder / MANIFEST}: no model spec (a model outside privquant's registry); pass a "
            "fresh instance of its architecture: load_quantized(folder, model=MyNet())"
        )
    if model is None:
        model = model_from_spec(spec)
    if manifest.get("bn_folded"):
        model, _ = fold_batchnorm(model.eval())
    try:
        tensors = load_file(str(folder / TENSORS))
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise PrivquantError(f"{folder / TENSORS}: cannot read the quantized tensors ({e})") from e
    from privquant.quant.apply import _set_module

    for name, info in manifest["layers"].items():
        try:
            layer = model.get_submodule(name)
        except AttributeError:
            raise PrivquantError(
                f"{folder / MANIFEST}: layer {name!r} is not in the given model; pass "
                "the architecture the export was made from"
            ) from None
        shape = info["shape"]
        codes = unpack(tensors[f"{name}.qweight"], info["storage_bits"], math.prod(shape)).astype(
            np.int64
        )
        q = torch.from_numpy(codes + info["qmin"]).float().view(shape)
        view = (-1,) + (1,) * (len(shape) - 1) if info["per_channel"] else ()
        scale = torch.from_numpy(tensors[f"{name}.scale"]).view(view)
        zero = torch.from_numpy(tensors[f"{name}.zero"]).view(view)
        with torch.no_grad():
            layer.weight.copy_((q - zero) * scale)
        ql = QuantLayer(layer, info["bits"], info["symmetric"], scale, zero, info["act_bits"])
        _set_module(model, name, ql)
    float_state = {
        k[len("float.") :]: torch.from_numpy(v)
        for k, v in tensors.items()
        if k.startswith("float.")
    }
    missing, unexpected = model.load_state_dict(float_state, strict=False)
    if unexpected:
        raise PrivquantError(
            f"{folder / TENSORS}: tensors {unexpected[:5]} do not fit the model in the manifest"
        )
    for name, info in manifest["layers"].items():
        model.get_submodule(name).act_enabled = info["act_bits"] is not None
    if spec:
        model_info(model).spec = spec
    from privquant.defenses.serving import apply_saved_outputs

    return apply_saved_outputs(model.eval(), folder), manifest


def fp32_size(model: nn.Module) -> dict[str, Any]:
    """Size accounting of a full-precision model, with the same keys as an export's ``size``."""
    n = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    return {
        "total_bytes": 4 * n,
        "avg_bits_per_quantized_weight": 32.0,
        "avg_bits_per_parameter": 32.0,
        "fp32_bytes": 4 * n,
    }


def model_size(model: nn.Module) -> dict[str, Any]:
    """Exact deployed size: the integer export's accounting when quantized, else fp32."""
    if not quant_layers(model):
        return fp32_size(model)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return export_quantized(model, tmp)["size"]
