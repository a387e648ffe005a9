from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from privquant.artifacts import (
    ArtifactCache,
    atomic_write_json,
    content_hash,
    load_checkpoint,
    save_checkpoint,
)
from privquant.data import load_dataset
from privquant.errors import PrivquantError
from privquant.models.info import model_info
from privquant.training import TrainConfig, evaluate, predict_logits, train_new_model
from privquant.training.augment import random_crop, random_flip, shift

FAST = TrainConfig(epochs=8, batch_size=64, lr=0.05)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_small_cnn_learns_digits(digits) -> None:
    model, result = train_new_model(
        "small_cnn", digits.x_train, digits.y_train, 10, FAST, progress=False
    )
    acc = evaluate(model, digits.x_test, digits.y_test)["accuracy"]
    assert acc > 0.9, acc
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_training_is_deterministic_for_a_seed(digits) -> None:
    cfg = FAST.model_copy(update={"epochs": 2, "augment": "crop+flip", "crop_padding": 1})
    a, _ = train_new_model("small_cnn", digits.x_train, digits.y_train, 10, cfg, progress=False)
    b, _ = train_new_model("small_cnn", digits.x_train, digits.y_train, 10, cfg, progress=False)
    c, _ = train_new_model(
        "small_cnn",
        digits.x_train,
        digits.y_train,
        10,
        cfg.model_copy(update={"seed": 1}),
        progress=False,
    )
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_mlp_on_tabular_features() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 5)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    cfg = TrainConfig(epochs=15, batch_size=64, optimizer="adam", lr=3e-3, weight_decay=0)
    model, _ = train_new_model("mlp", x[:500], y[:500], 2, cfg, progress=False, hidden=(32,))
    assert evaluate(model, x[500:], y[500:])["accuracy"] > 0.9


def test_augmentations_are_correct_transforms() -> None:
    """Each image is flipped or not (both happen, about half each), and each crop is one of the
    9 one-pixel shifts (several different ones happen): a do-nothing flip or crop fails."""
    x = torch.rand(200, 1, 5, 5)
    gen = torch.Generator().manual_seed(0)
    flipped = random_flip(x, gen)
    was_flipped = [bool(torch.equal(flipped[i], x[i].flip(2))) for i in range(200)]
    for i in range(200):
        assert was_flipped[i] or torch.equal(flipped[i], x[i])
    assert 70 < sum(was_flipped) < 130
    cropped = random_crop(x, 1, gen)
    assert cropped.shape == x.shape
    offsets = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    used = set()
    for i in range(200):  # every crop equals exactly one of the 9 possible shifts
        match = [o for o in offsets if torch.equal(cropped[i], shift(x, *o)[i])]
        assert len(match) == 1
        used.add(match[0])
    assert len(used) == 9
    # shift(dy, dx) moves content up/left by (dy, dx) with zero fill.
    assert torch.equal(shift(x, 0, 1)[:, :, :, :4], x[:, :, :, 1:])
    assert (
        torch.equal(shift(x, 1, 0)[:, :, :4], x[:, :, 1:])
        and shift(x, 1, 0)[:, :, 4].abs().sum() == 0
    )


def test_query_views_are_the_transforms_they_claim() -> None:
    from privquant.signals import query_views

    x = np.random.default_rng(0).integers(0, 256, (3, 1, 6, 6), dtype=np.uint8)
    views = query_views("image", 18, shift_size=2)
    assert (
        len(views) == 17 and query_views("tabular", 18) == [] and len(query_views("image", 2)) == 1
    )
    out = predict_logits(nn.Flatten(), x, views=views)  # the "logits" are the viewed pixels
    xb = torch.from_numpy(x).float() / 255
    expected = [xb, xb.flip(3)]
    for dy, dx in ((1, 0), (0, 1), (-1, 0), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1)):
        expected += [shift(xb, 2 * dy, 2 * dx), shift(xb.flip(3), 2 * dy, 2 * dx)]
    for q, e in enumerate(expected):
        np.testing.assert_array_equal(out[:, q], e.flatten(1).numpy())
    assert len({out[:, q].tobytes() for q in range(18)}) == 18


def test_predict_logits_with_views(digits) -> None:
    model, _ = train_new_model("small_cnn", digits.x_train[:64], digits.y_train[:64], 10,
                               FAST.model_copy(update={"epochs": 1}), progress=False)  # fmt: skip
    out = predict_logits(model, digits.x_test[:10], views=[lambda b: b.flip(3)])
    assert out.shape == (10, 2, 10) and out.dtype == np.float32
    np.testing.assert_allclose(
        out[:, 0], predict_logits(model, digits.x_test[:10]), rtol=1e-5, atol=1e-5
    )


def test_checkpoint_round_trip(tmp_path: Path, digits) -> None:
    model, _ = train_new_model("small_cnn", digits.x_train[:64], digits.y_train[:64], 10,
                               FAST.model_copy(update={"epochs": 1}), progress=False)  # fmt: skip
    save_checkpoint(tmp_path / "ck", model, {"model": model_info(model).spec})
    loaded, meta = load_checkpoint(tmp_path / "ck")
    np.testing.assert_array_equal(
        predict_logits(loaded, digits.x_test), predict_logits(model, digits.x_test)
    )
    assert meta["model"]["name"] == "small_cnn"
    (tmp_path / "ck" / "model.safetensors").write_bytes(b"corrupt")
    with pytest.raises(PrivquantError, match="model.safetensors"):
        load_checkpoint(tmp_path / "ck")


def test_artifact_cache_builds_once_and_is_atomic(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "c")
    key = cache.key(config={"lr": 0.1}, indices=np.arange(5))
    assert key == cache.key(config={"lr": 0.1}, indices=np.arange(5))
    assert key != cache.key(config={"lr": 0.1}, indices=np.arange(6))
    calls = []

    def build(d: Path) -> None:
        calls.append(1)
        (d / "x.json").write_text("{}")

    def crash(d: Path) -> None:
        (d / "partial").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.get_or_create(key, crash)
    assert cache.get(key) is None and not list((tmp_path / "c").rglob("partial"))
    p1 = cache.get_or_create(key, build)
    p2 = cache.get_or_create(key, build)
    assert p1 == p2 and len(calls) == 1 and (p1 / "x.json").is_file()


def test_content_hash_and_atomic_json(tmp_path: Path) -> None:
    assert content_hash({"a": 1, "b": [1, 2]}) == content_hash({"b": [1, 2], "a": 1})
    atomic_write_json(tmp_path / "r.json", {"x": 1})
    assert json.loads((tmp_path / "r.json").read_text()) == {"x": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_a_crop_padding_without_a_crop_is_refused() -> None:
    """The ResNet-20 studies once set crop_padding with augment: flip and never cropped."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="crop_padding is 4 but augment is 'flip'"):
        TrainConfig(augment="flip", crop_padding=4)
    assert TrainConfig(augment="flip").padding == 0
    assert TrainConfig(augment="crop+flip").padding == 4
    assert TrainConfig(augment="crop", crop_padding=2).padding == 2
    # The same refusal through a config file names the field.
    from privquant.errors import ConfigError
    from privquant.pipeline import load_config

    with pytest.raises(ConfigError, match="train: Value error, crop_padding is 4"):
        load_config({"data": {"name": "digits"}, "model": {"name": "mlp"},
                     "train": {"augment": "none", "crop_padding": 4}})  # fmt: skip
