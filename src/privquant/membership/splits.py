"""Membership splits in the LiRA style, saved with every run."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from privquant.artifacts.atomic import atomic_path
from privquant.errors import ConfigError, PrivquantError
from privquant.membership.canaries import NO_CANARIES, Canaries, tie_duplicates


@dataclass(frozen=True)
class MembershipSplit:
    """Indices that define an audit.

    ``pool``: rows of the dataset's *train* part forming the population; ``keep[m, j]`` is True
    when model ``m`` trains on ``pool[j]``. ``reference``: train-part rows disjoint from the pool,
    held by the defender (never trained on by any audited model). ``test``: rows of the *test*
    part, for accuracy only. ``population``: rows that no model and no defense ever trains on
    (RMIA's population z): train-part rows disjoint from both when ``population_part`` is
    "train", else rows of the test part (as Privacy Meter 2 uses CIFAR-10's test set), which
    may also score accuracy since no model trains on them either.
    """

    pool: np.ndarray
    keep: np.ndarray
    reference: np.ndarray
    test: np.ndarray
    seed: int
    population: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    population_part: str = "train"
    canaries: Canaries = NO_CANARIES

    def __post_init__(self) -> None:
        if self.population_part not in ("train", "test"):
            raise PrivquantError(
                f"population_part: 'train' or 'test', got {self.population_part!r}"
            )
        if self.keep.ndim != 2 or self.keep.shape[1] != len(self.pool):
            raise PrivquantError(f"keep must be [models, {len(self.pool)}], got {self.keep.shape}")
        if np.intersect1d(self.pool, self.reference).size:
            raise PrivquantError("reference set overlaps the population pool")
        if (
            self.population_part == "train"
            and np.intersect1d(self.population, np.r_[self.pool, self.reference]).size
        ):
            raise PrivquantError("population rows overlap the pool or the reference set")
        groups = self.canaries.groups
        if groups.size and (groups.min() < 0 or groups.max() >= len(self.pool)):
            raise PrivquantError("canary positions outside the pool")
        if groups.size and (self.keep[:, groups] != self.keep[:, groups[:, :1]]).any():
            raise PrivquantError("duplicate canary copies must share their membership (keep)")

    @property
    def n_models(self) -> int:
        return int(self.keep.shape[0])

    def members(self, model: int) -> np.ndarray:
        """Dataset train-part rows model ``model`` trains on."""
        return self.pool[self.keep[model]]

    def save(self, path: str | os.PathLike[str]) -> None:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, pool=self.pool, keep=self.keep, reference=self.reference, test=self.test,
                     seed=np.int64(self.seed), population=self.population,
                     population_part=np.str_(self.population_part),
                     canary_groups=self.canaries.groups, canary_labels=self.canaries.labels,
                     canary_kind=np.str_(self.canaries.kind))  # fmt: skip

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> MembershipSplit:
        try:
            with np.load(Path(path), allow_pickle=False) as z:
                population = z["population"] if "population" in z.files else np.zeros(0, np.int64)
                part = str(z["population_part"]) if "population_part" in z.files else "train"
                canaries = NO_CANARIES
                if "canary_groups" in z.files:
                    canaries = Canaries(str(z["canary_kind"]), z["canary_groups"].astype(np.int64),
                                        z["canary_labels"].astype(np.int64))  # fmt: skip
                return cls(z["pool"], z["keep"].astype(bool), z["reference"], z["test"], int(z["seed"]),
                           population, part, canaries)  # fmt: skip
        except (OSError, KeyError, ValueError) as e:
            raise PrivquantError(f"{path}: not a membership split file ({e})") from e

    def summary(self) -> dict[str, object]:
        return {
            "pool_size": len(self.pool),
            "n_models": self.n_models,
            "members_per_model": self.keep.sum(1).tolist(),
            "reference_size": len(self.reference),
            "test_size": len(self.test),
            "population_size": len(self.population),
            "population_part": self.population_part,
            "canaries": self.canaries.count,
            "canary_kind": self.canaries.kind,
            "canary_pool_positions": self.canaries.heads.tolist(),
            "seed": self.seed,
        }

    def with_target_members(self, n: int) -> MembershipSplit:
        """This split with model 0 trained on the first ``n`` pool rows and none of the rest: an
        audit of a model trained on rows the user knows (``audit_model``'s members)."""
        if not 0 < n < len(self.pool):
            raise ConfigError(
                f"population.target_members: {n} must be between 1 and the pool's "
                f"{len(self.pool)} rows minus one (the rest are the target's non-members)"
            )
        keep = self.keep.copy()
        keep[0] = np.arange(len(self.pool)) < n
        return replace(self, keep=keep)

    def with_canaries(self, canaries: Canaries) -> MembershipSplit:
        """This split with ``canaries`` recorded and duplicate copies' memberships tied."""
        return replace(self, keep=tie_duplicates(self.keep, canaries), canaries=canaries)


def make_split(
    n_train: int,
    n_test: int,
    pool_size: int,
    n_models: int,
    reference_size: int = 0,
    test_size: int | None = None,
    seed: int = 0,
    balanced: bool = False,
    population_size: int = 0,
    population_part: str = "train",
    ordered: bool = False,
) -> MembershipSplit:
    """Draw a pool, a keep matrix and disjoint reference/test sets, deterministically.

    By default every (model, point) membership is an independent fair coin, so each model
    trains on about half the pool and the shadows' rows of ``keep`` say nothing about the
    target's row. ``balanced=True`` instead makes every point a member of exactly
    ``n_models // 2`` models (the LiRA reference code's scheme); then a point's membership in
    one model is determined by the others, which an attack learning from shadow membership
    (e.g. a per-point classifier) can exploit with few models. Use it only with many models.
    ``ordered=True`` takes the rows in the data's own order instead of drawing them: the first
    ``pool_size`` training rows are the pool, the next ``reference_size`` the reference, then
    the population; the first ``test_size`` test rows. The keep matrix is drawn as before (from
    the same stream), so with ``pool_size`` equal to every training row both orders agree.
    """
    if n_models < 1:
        raise ConfigError(f"n_models: must be >= 1, got {n_models}")
    if pool_size < 2:
        raise ConfigError(f"pool_size: must be >= 2, got {pool_size}")
    from_train = population_size if population_part == "train" else 0
    if pool_size + reference_size + from_train > n_train:
        raise ConfigError(
            f"pool_size + reference_size + population_size = {pool_size + reference_size + from_train} "
            f"exceeds the {n_train} training rows"
        )
    if population_part == "test" and population_size > n_test:
        raise ConfigError(f"population_size: {population_size} exceeds the {n_test} test rows")
    test_size = n_test if test_size is None else test_size
    if test_size > n_test:
        raise ConfigError(f"test_size: {test_size} exceeds the {n_test} test rows")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n_train)
    if ordered:  # the same draws are made, so the keep matrix below is the seed's as well
        perm = np.arange(n_train)
    pool = np.sort(perm[:pool_size])
    reference = np.sort(perm[pool_size : pool_size + reference_size])
    # Drawn after the reference rows from the same permutation: adding population rows leaves
    # the pool, keep matrix, reference and test rows of a seed unchanged.
    start = pool_size + reference_size
    population = np.sort(perm[start : start + from_train])
    test = np.sort(rng.permutation(n_test)[:test_size])
    if ordered:
        test = np.arange(test_size)
    if balanced and n_models > 1:
        keep = rng.random((n_models, pool_size)).argsort(axis=0) < n_models // 2
    else:
        keep = rng.random((n_models, pool_size)) < 0.5
    if population_part == "test":  # its own stream: the draws above stay those of the seed
        drawn = np.random.default_rng([seed, 1]).permutation(n_test)
        population = np.sort((np.arange(n_test) if ordered else drawn)[:population_size])
    return MembershipSplit(pool, keep, reference, test, seed, population, population_part)
