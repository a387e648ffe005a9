"""A trained model's owner: the rows it trained on, its reference rows, its defense context.

``privquant train`` records how many rows it trained on and the seed that drew them; every
later step (quantize, defend, an audit of the checkpoint) uses those very rows, so a defense
fine-tunes and an audit measures membership on what the model really saw.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from privquant.data import Dataset
from privquant.defenses import DefenseContext
from privquant.errors import ConfigError, PrivquantError
from privquant.population.jobs import model_factory
from privquant.training import TrainConfig


@dataclass(frozen=True)
class OwnerRows:
    """How many of the dataset's training rows the model trained on and the seed that drew them
    (``train_size`` 0: all); ``seed`` seeds the defense's own draws."""

    train_size: int
    rows_seed: int
    seed: int


def rows_from_record(
    meta: dict[str, Any], train_size: int | None, seed: int | None, where: str = "checkpoint"
) -> OwnerRows:
    """The training rows a checkpoint records unless ``train_size``/``seed`` say otherwise. A
    ``train_size`` that contradicts the record is refused: it would audit and fine-tune on rows
    the model never trained on."""
    recorded = meta.get("train") if isinstance(meta.get("train"), dict) else {}
    rec_n, rec_seed = recorded.get("train_size"), recorded.get("train_rows_seed")
    if train_size is None:
        train_size = int(rec_n) if isinstance(rec_n, int) else 0
    elif isinstance(rec_n, int) and train_size not in (0, rec_n):
        raise ConfigError(f"--train-size {train_size}: {where} was trained on {rec_n} rows "
                          "(its meta.json); omit the flag to use them")  # fmt: skip
    elif train_size == 0 and isinstance(rec_n, int):
        train_size = rec_n
    # The rows are the ones training drew; ``seed`` then seeds only what the defense draws.
    rows_seed = int(rec_seed) if isinstance(rec_seed, int) else (seed or 0)
    return OwnerRows(train_size, rows_seed, rows_seed if seed is None else seed)


def owner_rows(
    ds: Dataset, train_size: int, rows_seed: int, reference_size: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training rows (the seeded subset ``privquant train`` drew), reference rows drawn from
    the rows it did not train on, and the rest."""
    n = min(train_size or len(ds.y_train), len(ds.y_train))
    perm = np.random.default_rng(rows_seed).permutation(len(ds.y_train))
    rows = np.sort(perm[:n])
    ref = np.sort(perm[n : n + reference_size])
    if reference_size and len(ref) < reference_size:
        raise PrivquantError(
            f"--reference-size: only {len(ref)} rows of {ds.name} are left after {n} training rows"
        )
    return rows, ref, perm[n + len(ref) :]


def owner_context(
    meta: dict[str, Any],
    ds: Dataset,
    rows: np.ndarray,
    reference: np.ndarray,
    seed: int,
    fallback: TrainConfig,
) -> DefenseContext:
    """The defense context of a checkpoint's owner. Train-stage defenses retrain with the recipe
    the checkpoint records (``fallback``, e.g. the fine-tuning flags, when it records none)."""
    spec = meta.get("model") or {}
    options = {k: v for k, v in spec.get("kwargs", {}).items()
               if k not in ("input_shape", "num_classes", "mean", "std")}  # fmt: skip
    recorded = meta.get("train") or {}
    recipe = recorded.get("config") if isinstance(recorded.get("config"), dict) else recorded
    if isinstance(recipe, dict) and "epochs" in recipe:
        train = TrainConfig.model_validate(recipe).model_copy(update={"seed": seed})
    else:
        print("privquant: the checkpoint records no training recipe; train-stage defenses use "
              f"--epochs {fallback.epochs} --lr {fallback.lr}", file=sys.stderr)  # fmt: skip
        train = fallback.model_copy(update={"seed": seed})
    has_ref = len(reference) > 0
    return DefenseContext(x=ds.x_train[rows], y=ds.y_train[rows],
                          x_reference=ds.x_train[reference] if has_ref else None,
                          y_reference=ds.y_train[reference] if has_ref else None,
                          num_classes=ds.num_classes, train=train, seed=seed,
                          model_fn=model_factory(spec.get("name", "small_cnn"), ds.num_classes, options))  # fmt: skip


def checkpoint_dataset(meta: dict[str, Any], override: str | None) -> str:
    """The dataset a checkpoint was trained on (``override`` wins)."""
    name = override or meta.get("dataset") or meta.get("train", {}).get("dataset")
    if not name:
        raise PrivquantError("the checkpoint does not record its dataset; pass --data NAME")
    return name


# Every file a privquant export or checkpoint folder may hold; a new export into a folder
# removes them first, so a stale graph or weights of another kind never sit beside new ones.
EXPORT_FILES = ("manifest.json", "quantized.safetensors", "model.safetensors", "meta.json",
                "defense.json", "outputs.json", "outputs.safetensors", "model.onnx", "model.int8.onnx")  # fmt: skip


def prepare_export_folder(out: Path, source: Path) -> Path:
    """``out`` ready for a new export: never the input checkpoint, no stale artifacts."""
    if out.exists() and source.exists() and out.resolve() == source.resolve():
        raise ConfigError(
            f"--out {out}: is the input checkpoint; writing there would overwrite the model it was "
            "made from. Choose another folder"
        )
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder")
    for name in EXPORT_FILES:
        (out / name).unlink(missing_ok=True)
    return out
