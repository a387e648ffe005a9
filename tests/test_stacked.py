"""Stacked training (torch.func): K models at once give the models the one-model trainer gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from privquant.training import TrainConfig, Trainer
from privquant.training.device import seed_everything
from privquant.training.stacked import StackingError, fit_stacked


def _bn_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16, 3),
    )


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def _fresh(build, seed: int) -> nn.Module:  # noqa: ANN001
    seed_everything(seed)
    return build()


def _one_by_one(build, x, y, rows, configs):  # noqa: ANN001, ANN202
    out = []
    for r, c in zip(rows, configs, strict=True):
        model = _fresh(build, c.seed)
        Trainer(c).fit(model, x[r], y[r], progress=False)
        out.append(model)
    return out


def _stacked(build, x, y, rows, configs):  # noqa: ANN001, ANN202
    models = [_fresh(build, c.seed) for c in configs]
    results = fit_stacked(models, x, y, rows, configs, progress=False)
    return models, results


def _max_diff(a: nn.Module, b: nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    return max(float((sa[k].double() - sb[k].double()).abs().max()) for k in sa)


def _recipe(**kw) -> list[TrainConfig]:  # noqa: ANN003
    base = dict(epochs=3, batch_size=16, lr=0.05, precision="fp32", channels_last=False,
                device="cpu")  # fmt: skip
    base.update(kw)
    return [TrainConfig(seed=s, **base) for s in (3, 11)]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # float sums in one order on both paths
    yield
    torch.set_num_threads(threads)


def test_batchnorm_models_with_augmentation_match_the_one_model_trainer() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (80, 3, 8, 8), dtype=np.uint8)
    y = rng.integers(0, 3, 80)
    rows = [np.arange(0, 64), np.arange(16, 80)]  # equal counts, full batches: no masking
    configs = _recipe(augment="crop+flip", crop_padding=2, weight_decay=5e-4, momentum=0.9)
    alone = _one_by_one(_bn_net, x, y, rows, configs)
    stacked, results = _stacked(_bn_net, x, y, rows, configs)
    for a, s in zip(alone, stacked, strict=True):
        assert _max_diff(a, s) < 1e-4  # weights and BatchNorm running statistics
    assert _max_diff(stacked[0], stacked[1]) > 1e-2  # two seeds, two models
    assert [h["epoch"] for h in results[0].history] == [1, 2, 3]
    assert not stacked[0].training


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_models_with_different_member_counts_each_follow_their_own_schedule(
    optimizer: str,
) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(100, 6)).astype(np.float32)
    y = rng.integers(0, 3, 100)
    rows = [np.arange(0, 64), np.arange(50, 90)]  # 4 vs 3 steps an epoch, a short last batch
    configs = _recipe(optimizer=optimizer, lr=0.01 if optimizer == "adam" else 0.05)
    alone = _one_by_one(_mlp, x, y, rows, configs)
    stacked, results = _stacked(_mlp, x, y, rows, configs)
    for a, s in zip(alone, stacked, strict=True):
        assert _max_diff(a, s) < 1e-5  # no BatchNorm: the filled-up batch changes nothing
    one = Trainer(configs[1]).fit(_fresh(_mlp, 11), x[rows[1]], y[rows[1]], progress=False)
    for h_one, h_stacked in zip(one.history, results[1].history, strict=True):
        assert h_stacked["train_loss"] == pytest.approx(h_one["train_loss"], rel=1e-5)
        assert h_stacked["lr"] == pytest.approx(h_one["lr"], rel=1e-9)


def test_batchnorm_with_a_short_last_batch_stays_close() -> None:
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (90, 3, 8, 8), dtype=np.uint8)
    y = rng.integers(0, 3, 90)
    rows = [np.arange(0, 64), np.arange(40, 90)]  # 50 rows: the last batch of 2 is filled to 16
    configs = _recipe(epochs=2)
    alone = _one_by_one(_bn_net, x, y, rows, configs)
    stacked, _ = _stacked(_bn_net, x, y, rows, configs)
    assert _max_diff(alone[0], stacked[0]) < 1e-4
    # Only the short batch's BatchNorm statistics differ: close, not equal.
    assert _max_diff(alone[1], stacked[1]) < 0.1


def test_recipes_and_architectures_must_agree() -> None:
    x = np.zeros((20, 6), np.float32)
    y = np.zeros(20, np.int64)
    rows = [np.arange(10), np.arange(10, 20)]
    c0, c1 = _recipe()
    with pytest.raises(StackingError, match="model 1's recipe differs"):
        fit_stacked([_mlp(), _mlp()], x, y, rows, [c0, c1.model_copy(update={"lr": 0.2})])
    wide = nn.Sequential(nn.Linear(6, 9), nn.ReLU(), nn.Linear(9, 3))
    with pytest.raises(StackingError, match="model 1's parameters differ"):
        fit_stacked([_mlp(), wide], x, y, rows, [c0, c1])


def test_a_stacked_population_lands_under_the_keys_the_pipeline_reads(tmp_path) -> None:  # noqa: ANN001
    from privquant.artifacts import ArtifactCache, load_checkpoint
    from privquant.data import load_dataset
    from privquant.membership import make_split
    from privquant.population import population_jobs, train_population
    from privquant.population.jobs import train_stacked

    ds = load_dataset("digits")
    split = make_split(len(ds.y_train), len(ds.y_test), 300, 3, 0, seed=0)  # coin-flip counts
    cfg = TrainConfig(epochs=3, batch_size=32, optimizer="adam", lr=0.003, precision="fp32",
                      channels_last=False, device="cpu")  # fmt: skip
    one = train_population(ds, split, "mlp", cfg, ArtifactCache(tmp_path / "a"), {"hidden": [16]},
                           progress=False)  # fmt: skip
    stacked_cache = ArtifactCache(tmp_path / "b")
    jobs = population_jobs(split, "mlp", cfg, {"hidden": [16]})
    assert train_stacked(jobs, ds, stacked_cache, stack=2, progress=False) == 2  # 2 + 1 alone
    stacked = train_population(ds, split, "mlp", cfg, stacked_cache, {"hidden": [16]},
                               progress=False, stack=2)  # fmt: skip
    assert [p.name for p in stacked] == [p.name for p in one]  # same keys: same models
    for a, b in zip(one, stacked, strict=True):
        ma, meta_a = load_checkpoint(a)
        mb, meta_b = load_checkpoint(b)
        assert meta_a == meta_b
        assert _max_diff(ma, mb) < 1e-5
    # Nothing retrains.
    again = train_population(ds, split, "mlp", cfg, stacked_cache, {"hidden": [16]},
                             progress=False, stack=2)  # fmt: skip
    assert again == stacked
