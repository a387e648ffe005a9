from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from privquant.errors import ConfigError
from privquant.membership import CanaryConfig, MembershipSplit, choose_canaries, make_split


def test_split_properties_and_determinism(tmp_path: Path) -> None:
    s = make_split(
        n_train=5000,
        n_test=1000,
        pool_size=2000,
        n_models=8,
        reference_size=1000,
        test_size=300,
        seed=7,
    )
    assert s.keep.shape == (8, 2000)
    assert np.abs(s.keep.sum(1) - 1000).max() < 100  # each model trains on about half the pool
    # Independent memberships: another model's row carries no information about model 0's.
    assert abs(np.corrcoef(s.keep[0], s.keep[1:].sum(0))[0, 1]) < 0.1
    balanced = make_split(5000, 1000, 2000, 8, 1000, 300, seed=7, balanced=True)
    assert (balanced.keep.sum(0) == 4).all()  # LiRA's scheme: each point IN for exactly half
    assert np.intersect1d(s.pool, s.reference).size == 0
    assert len(np.unique(s.pool)) == 2000 and s.test.max() < 1000
    again = make_split(5000, 1000, 2000, 8, 1000, 300, seed=7)
    assert (again.keep == s.keep).all() and (again.pool == s.pool).all()
    other = make_split(5000, 1000, 2000, 8, 1000, 300, seed=8)
    assert not (other.keep == s.keep).all()
    s.save(tmp_path / "split.npz")
    loaded = MembershipSplit.load(tmp_path / "split.npz")
    assert (loaded.keep == s.keep).all() and loaded.seed == 7
    assert (loaded.members(3) == s.pool[s.keep[3]]).all()


def test_fewer_models_are_the_first_models_of_a_larger_population() -> None:
    # An audit of the first k models of a population (size 3, part 5's interim 6-model audit) finds
    # the same members, canaries and rows, hence the same cached models, as the full population.
    labels = np.random.default_rng(0).integers(0, 10, 5000)
    canaries = choose_canaries(CanaryConfig(count=60, copies=2), labels[:2000], 10, seed=7)
    big = make_split(5000, 1000, 2000, 8, 500, 300, seed=7).with_canaries(canaries)
    small = make_split(5000, 1000, 2000, 6, 500, 300, seed=7).with_canaries(canaries)
    assert np.array_equal(small.keep, big.keep[:6])
    for name in ("pool", "reference", "test"):
        assert np.array_equal(getattr(small, name), getattr(big, name))
    for m in range(6):
        assert np.array_equal(small.members(m), big.members(m))


def test_split_rejects_impossible_sizes() -> None:
    with pytest.raises(ConfigError, match="exceeds the 100 training rows"):
        make_split(100, 10, pool_size=80, n_models=4, reference_size=30)
    with pytest.raises(ConfigError, match="test_size"):
        make_split(100, 10, pool_size=50, n_models=4, test_size=11)


def test_population_from_the_test_part(tmp_path: Path) -> None:
    # Privacy Meter 2's layout: the whole train part is the pool, the population is test rows.
    s = make_split(3000, 800, 3000, 4, 0, None, seed=3, balanced=True,
                   population_size=500, population_part="test")  # fmt: skip
    plain = make_split(3000, 800, 3000, 4, 0, None, seed=3, balanced=True)
    assert s.population_part == "test" and len(np.unique(s.population)) == 500
    assert s.population.max() < 800  # indexes the test part, so it may use the whole train part
    for name in ("pool", "keep", "reference", "test"):  # the rest of the seed's draw is unchanged
        assert np.array_equal(getattr(s, name), getattr(plain, name))
    s.save(tmp_path / "split.npz")
    back = MembershipSplit.load(tmp_path / "split.npz")
    assert back.population_part == "test" and np.array_equal(back.population, s.population)
    assert s.summary()["population_part"] == "test"
    with pytest.raises(ConfigError, match="population_size: 900 exceeds the 800 test rows"):
        make_split(3000, 800, 3000, 4, population_size=900, population_part="test")
    with pytest.raises(ConfigError, match="exceeds the 3000 training rows"):
        make_split(3000, 800, 3000, 4, population_size=10)  # from the train part: no room
