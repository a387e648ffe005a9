"""The signals an audit needs: every model's outputs on every pool point, and who trained on what.

Attacks are functions of these arrays only, so adding an attack never retrains or re-queries.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from privquant.artifacts.atomic import atomic_path
from privquant.errors import PrivquantError

SIGNALS_HOW = (
    "an .npz with logits float32 [models, points, queries, classes], labels int64 [points], "
    "keep bool [models, points]; optionally population_logits [models, P, queries, classes] and "
    "population_labels [P] (rows no model trained on), and extra_<name> [models, points] arrays"
)


@dataclass
class Signals:
    """``logits[m, i, q]``: model ``m``'s logits on point ``i`` under query view ``q`` (view 0 is
    the original input); ``labels[i]``: the point's true class; ``keep[m, i]``: True when point
    ``i`` was in model ``m``'s training set.

    Optional: ``population_logits``/``population_labels``, every model's outputs on rows that
    no model trained on (RMIA's population z); ``extras``, per-model, per-point measurements
    that needed the model itself (e.g. ``noise_robustness`` for the label-only boundary attack).
    """

    logits: np.ndarray
    labels: np.ndarray
    keep: np.ndarray
    population_logits: np.ndarray | None = None
    population_labels: np.ndarray | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    _stats: dict[str, np.ndarray] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def statistic(
        self, name: str, fn: Callable[[np.ndarray, np.ndarray], np.ndarray], model_axis: int = 0
    ) -> np.ndarray:
        """``fn(logits, labels)`` over all models, computed once per Signals object.

        ``fn`` works per model (its output has the models on ``model_axis``), so it is run on a
        few models at a time: its float64 temporaries then stay small whatever the population
        size. Only logits-derived statistics are cached, never anything that depends on ``keep``.
        """
        if name not in self._stats:
            self._stats[name] = _chunked(fn, self.logits, self.labels, model_axis)
        return self._stats[name]

    def population_statistic(
        self, name: str, fn: Callable[[np.ndarray, np.ndarray], np.ndarray], model_axis: int = 0
    ) -> np.ndarray | None:
        """Like :meth:`statistic` on the population block; None when the signals carry none."""
        if self.population_logits is None:
            return None
        key = f"population:{name}"
        if key not in self._stats:
            self._stats[key] = _chunked(
                fn, self.population_logits, self.population_labels, model_axis
            )
        return self._stats[key]

    def __post_init__(self) -> None:
        self.logits = np.asarray(self.logits, dtype=np.float32)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.keep = np.asarray(self.keep, dtype=bool)
        if self.logits.ndim == 3:  # [models, points, classes]: one query
            self.logits = self.logits[:, :, None, :]
        if self.logits.ndim != 4:
            raise PrivquantError(
                f"signals.logits: expected [models, points, queries, classes] (or [models, points, "
                f"classes] for one query), got shape {self.logits.shape}"
            )
        m, n, _, c = self.logits.shape
        if self.labels.shape != (n,):
            raise PrivquantError(f"signals.labels: expected [{n}], got {self.labels.shape}")
        if self.keep.shape != (m, n):
            raise PrivquantError(f"signals.keep: expected [{m}, {n}], got {self.keep.shape}")
        if n and (self.labels.min() < 0 or self.labels.max() >= c):
            raise PrivquantError(f"signals.labels: values must lie in 0..{c - 1}")
        _check_logits("signals.logits", self.logits)
        if (self.population_logits is None) != (self.population_labels is None):
            raise PrivquantError("signals: population_logits and population_labels come together")
        if self.population_logits is not None:
            self.population_logits = np.asarray(self.population_logits, dtype=np.float32)
            self.population_labels = np.asarray(self.population_labels, dtype=np.int64)
            pl = self.population_logits
            if pl.ndim != 4 or (pl.shape[0], pl.shape[2], pl.shape[3]) != (m, self.n_queries, c):
                raise PrivquantError(f"signals.population_logits: expected [{m}, P, {self.n_queries}, {c}], "
                                     f"got {pl.shape}")  # fmt: skip
            if self.population_labels.shape != (pl.shape[1],):
                raise PrivquantError(f"signals.population_labels: expected [{pl.shape[1]}], "
                                     f"got {self.population_labels.shape}")  # fmt: skip
            _check_logits("signals.population_logits", pl)
        for name, arr in self.extras.items():
            arr = self.extras[name] = np.asarray(arr, dtype=np.float32)
            if arr.shape[:2] != (m, n):
                raise PrivquantError(
                    f"signals.extra_{name}: expected [{m}, {n}, ...], got {arr.shape}"
                )

    @property
    def n_models(self) -> int:
        return self.logits.shape[0]

    @property
    def n_points(self) -> int:
        return self.logits.shape[1]

    @property
    def n_queries(self) -> int:
        return self.logits.shape[2]

    @property
    def n_classes(self) -> int:
        return self.logits.shape[3]

    def save(self, path: str | os.PathLike[str]) -> None:
        arrays = {"logits": self.logits, "labels": self.labels, "keep": self.keep}
        if self.population_logits is not None:
            arrays["population_logits"] = self.population_logits
            arrays["population_labels"] = self.population_labels
        arrays.update({f"extra_{k}": v for k, v in self.extras.items()})
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Signals:
        path = Path(path)
        if not path.is_file():
            raise PrivquantError(f"{path}: signals file not found; expected {SIGNALS_HOW}")
        try:
            loaded = np.load(path, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):  # a plain .npy: one bare array
                raise PrivquantError(
                    f"one bare array (a .npy file), not an .npz archive; expected {SIGNALS_HOW}"
                )
            with loaded as z:
                missing = {"logits", "labels", "keep"} - set(z.files)
                if missing:
                    raise PrivquantError(
                        f"{path}: missing arrays {sorted(missing)}; expected {SIGNALS_HOW}"
                    )
                pop = "population_logits" in z.files
                return cls(z["logits"], z["labels"], z["keep"],
                           z["population_logits"] if pop else None,
                           z["population_labels"] if "population_labels" in z.files else None,
                           {f.removeprefix("extra_"): z[f] for f in z.files if f.startswith("extra_")})  # fmt: skip
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
            raise PrivquantError(
                f"{path}: not a readable .npz ({e}); expected {SIGNALS_HOW}"
            ) from e
        except PrivquantError as e:
            raise PrivquantError(f"{path}: {e}") from e


def _check_logits(where: str, logits: np.ndarray) -> None:
    if not np.isfinite(logits).all():
        raise PrivquantError(f"{where}: contains NaN or infinity")
    # Probabilities passed as logits would be silently re-softmaxed into near-uniform outputs
    # and under-state leakage; a probability row is non-negative and sums to 1.
    # Checked model by model: one model wrapped in a softmax (e.g. the target) among models
    # that return logits is the case that understates leakage most.
    per_model = logits if logits.ndim >= 3 else logits[None]
    for m, rows in enumerate(per_model):
        if rows.size and rows.min() >= 0 and np.allclose(rows.sum(-1), 1.0, atol=1e-4):
            which = f"model {m}'s" if logits.ndim >= 3 else "every"
            raise PrivquantError(
                f"{where}: {which} rows are probability vectors (non-negative, sum to 1); pass "
                "logits, or log-probabilities (np.log(p), clipped away from 0) if only "
                "probabilities exist (a model ending in a softmax: remove the softmax)"
            )


CHUNK_BYTES = 64 * 2**20  # float64 logits per chunk of models: bounds a statistic's temporaries


def _chunked(
    fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
    logits: np.ndarray,
    labels: np.ndarray,
    model_axis: int,
) -> np.ndarray:
    per_model = max(1, logits[0].size * 8)
    step = max(1, CHUNK_BYTES // per_model)
    parts = [fn(logits[m : m + step], labels) for m in range(0, len(logits), step)]
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=model_axis)
