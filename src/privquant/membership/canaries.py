"""Canaries: pool points made to be memorized, the worst case an audit must report.

Population-average membership inference understates leakage by about an order of magnitude
(Aerni, Zhang & Tramer, CCS 2024): the points a model must memorize to fit are the ones an
attacker finds. A canary is a pool point whose membership is the same coin flip per model as
any other point, made hard to fit without memorizing it:

- ``mislabel``: a pool row given a fixed wrong label;
- ``noise``: an out-of-distribution input (uniform noise for images, each feature drawn from
  another row for tables) with a random label;
- ``duplicate``: a mislabeled canary planted as ``copies`` identical rows, IN or OUT together.
  Against split self-distillation (SELENA), one copy can reach a teacher that labels another
  copy: the defense-adapted canary of Aerni et al.

Canaries are pool rows, so they are never in the reference, population or test rows.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from privquant.data import Dataset
from privquant.errors import ConfigError

CanaryKind = Literal["mislabel", "noise", "duplicate"]


class CanaryConfig(BaseModel):
    """``data.canaries`` in an audit config."""

    model_config = ConfigDict(extra="forbid")

    count: int = Field(0, ge=0, description="canaries planted in the pool (0: none)")
    kind: CanaryKind = Field("mislabel", description="mislabel | noise | duplicate")
    copies: int = Field(
        4, ge=2, le=64, description="duplicate only: identical rows per canary, IN or OUT together"
    )

    @property
    def rows_used(self) -> int:
        return self.count * (self.copies if self.kind == "duplicate" else 1)


@dataclass(frozen=True)
class Canaries:
    """Where the canaries are: ``groups[c]`` are the pool positions of canary ``c`` (one
    position, or ``copies`` for duplicates; the first is the one its metrics count), ``labels[c]``
    the label it is trained with."""

    kind: str
    groups: np.ndarray  # int64 [count, copies]
    labels: np.ndarray  # int64 [count]

    @property
    def count(self) -> int:
        return int(len(self.groups))

    @property
    def heads(self) -> np.ndarray:
        """One pool position per canary: duplicates are one canary, counted once."""
        return self.groups[:, 0] if self.count else np.zeros(0, dtype=np.int64)

    def masks(self, pool_size: int) -> dict[str, np.ndarray]:
        """Boolean masks over pool positions: ``canaries`` (one per canary), ``rest`` (every
        point that is no canary copy) and ``all``."""
        canary = np.zeros(pool_size, dtype=bool)
        canary[self.heads] = True
        any_copy = np.zeros(pool_size, dtype=bool)
        any_copy[self.groups.ravel()] = True
        return {"all": np.ones(pool_size, dtype=bool), "canaries": canary, "rest": ~any_copy}


NO_CANARIES = Canaries("none", np.zeros((0, 1), dtype=np.int64), np.zeros(0, dtype=np.int64))


def choose_canaries(
    config: CanaryConfig, pool_labels: np.ndarray, num_classes: int, seed: int
) -> Canaries:
    """Which pool positions become canaries and their labels, drawn from ``seed`` on a stream
    of its own (the pool, keep matrix and reference rows of a seed stay those without canaries)."""
    if config.count == 0:
        return NO_CANARIES
    pool_size = len(pool_labels)
    if config.rows_used > pool_size // 2:
        raise ConfigError(
            f"data.canaries: {config.rows_used} canary rows exceed half of the {pool_size}-point "
            "pool (data.pool_size); plant fewer canaries or copies"
        )
    if num_classes < 2:
        raise ConfigError("data.canaries: need at least 2 classes to give a wrong label")
    rng = np.random.default_rng([seed, 2])
    copies = config.copies if config.kind == "duplicate" else 1
    positions = rng.permutation(pool_size)[: config.count * copies].reshape(config.count, copies)
    if config.kind == "noise":
        labels = rng.integers(0, num_classes, config.count)
    else:  # a wrong label, uniform over the other classes
        shift = rng.integers(1, num_classes, config.count)
        labels = (pool_labels[positions[:, 0]] + shift) % num_classes
    return Canaries(config.kind, positions.astype(np.int64), labels.astype(np.int64))


def plant_in_dataset(ds: Dataset, pool: np.ndarray, canaries: Canaries, seed: int) -> Dataset:
    """A copy of ``ds`` whose train rows at the canaries carry their canary label (and, for
    noise, their out-of-distribution input; for duplicates, the first copy's input)."""
    if canaries.count == 0:
        return ds
    x, y = ds.x_train, ds.y_train.copy()
    rows = pool[canaries.groups]  # dataset rows [count, copies]
    if canaries.kind in ("noise", "duplicate"):
        x = x.copy()
    if canaries.kind == "noise":
        rng = np.random.default_rng([seed, 3])
        heads = rows[:, 0]
        if ds.kind == "image":
            info = np.iinfo(x.dtype) if np.issubdtype(x.dtype, np.integer) else None
            hi = info.max + 1 if info else 1.0
            noise = (
                rng.integers(0, hi, size=(len(heads), *x.shape[1:]))
                if info
                else rng.random((len(heads), *x.shape[1:]))
            )
            x[heads] = noise.astype(x.dtype)
        else:  # each feature from a random other row: in range per feature, jointly unlike data
            donors = rng.integers(0, len(x), size=(len(heads), x.shape[1]))
            x[heads] = x[donors, np.arange(x.shape[1])]
    if canaries.kind == "duplicate":
        x[rows] = x[rows[:, :1]]
    y[rows] = canaries.labels[:, None]
    extra = {**ds.extra, "canaries": {"kind": canaries.kind, "count": canaries.count}}
    return replace(ds, x_train=x, y_train=y, extra=extra)


def tie_duplicates(keep: np.ndarray, canaries: Canaries) -> np.ndarray:
    """``keep`` with every copy of a duplicate canary following its first copy's membership."""
    if canaries.count == 0 or canaries.groups.shape[1] == 1:
        return keep
    keep = keep.copy()
    keep[:, canaries.groups] = keep[:, canaries.groups[:, :1]]
    return keep
