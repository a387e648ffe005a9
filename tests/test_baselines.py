"""Baseline defenses (issue 11): each one measurably does what it is for, on real data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from privquant.data import load_dataset
from privquant.defenses import DefenseContext, apply_outputs, train_model
from privquant.models.info import model_info
from privquant.population import model_factory
from privquant.training import TrainConfig, predict_logits

N_MEMBERS = 600


@pytest.fixture(scope="module")
def digits():  # noqa: ANN201
    return load_dataset("digits")


@pytest.fixture(scope="module")
def fashion():  # noqa: ANN201
    from conftest import require_dataset

    return require_dataset("fashion-mnist")


def _context(
    ds, model: str = "mlp", options: dict | None = None, epochs: int = 40
) -> DefenseContext:  # noqa: ANN001
    """An overfitting setup: 600 rows, a wide MLP, many epochs, no weight decay. Rows 600-1199
    are held out (never trained on); the defender's reference rows come after them."""
    ref = slice(2 * N_MEMBERS, 2 * N_MEMBERS + 500)
    return DefenseContext(
        x=ds.x_train[:N_MEMBERS], y=ds.y_train[:N_MEMBERS],
        x_reference=ds.x_train[ref], y_reference=ds.y_train[ref],
        num_classes=10, train=TrainConfig(epochs=epochs, batch_size=32, optimizer="adam", lr=3e-3, weight_decay=0),
        seed=0, model_fn=model_factory(model, 10, options if options is not None else {"hidden": [256]}),
    )  # fmt: skip


def _losses(model: nn.Module, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    logits = torch.from_numpy(predict_logits(model, x))
    return torch.nn.functional.cross_entropy(
        logits, torch.as_tensor(y).long(), reduction="none"
    ).numpy()


def _gap(model: nn.Module, ctx: DefenseContext, ds) -> float:  # noqa: ANN001
    """Mean loss of held-out rows minus mean loss of members: what loss attacks exploit."""
    held = slice(N_MEMBERS, N_MEMBERS + 600)
    return float(
        _losses(model, ds.x_train[held], ds.y_train[held]).mean()
        - _losses(model, ctx.x, ctx.y).mean()
    )


@pytest.fixture(scope="module")
def plain_gap(fashion) -> float:  # noqa: ANN001
    ctx = _context(fashion)
    return _gap(train_model(None, ctx), ctx, fashion)


BASELINES = [
    {"method": "dp_sgd", "epsilon": 8.0, "epochs": 20, "batch_size": 64},
    {"method": "relaxloss", "alpha": 0.5},
    {"method": "hamp", "entropy_fraction": 0.8, "alpha": 0.01},
    {"method": "label_smoothing", "smoothing": 0.4},
    {"method": "early_stopping", "patience": 2, "validation_rows": 500},
    {"method": "weight_decay", "value": 3.0},
    {"method": "split_distill", "teachers": 4},
]


@pytest.mark.parametrize("step", BASELINES, ids=[s["method"] for s in BASELINES])
def test_each_baseline_narrows_the_member_nonmember_loss_gap(
    step: dict, fashion, plain_gap: float
) -> None:  # noqa: ANN001
    from privquant.defenses import VariantConfig

    if step["method"] == "dp_sgd":
        pytest.importorskip("opacus")
    ctx = _context(fashion)
    variant = VariantConfig(name="v", steps=[step])
    model = train_model(variant.train_step, ctx)
    gap = _gap(model, ctx, fashion)
    # Measured (2-core EPYC): plain 0.80 nats; dp_sgd 0.07, relaxloss 0.30, hamp 0.43, label
    # smoothing 0.50, early stopping 0.25, weight decay 0.49, split_distill 0.05.
    assert plain_gap > 0.5
    assert gap < 0.75 * plain_gap, f"{step['method']}: gap {gap:.3f} vs plain {plain_gap:.3f}"
    # ... and the model still learned the task.
    acc = (predict_logits(model, fashion.x_test[:2000]).argmax(1) == fashion.y_test[:2000]).mean()
    assert acc > 0.6


def test_dp_sgd_reports_a_finite_epsilon_and_beats_chance(digits) -> None:  # noqa: ANN001
    pytest.importorskip("opacus")
    from privquant.defenses.dp_sgd import DPSGD, dp_train

    ctx = _context(digits, epochs=5)
    model, info = dp_train(DPSGD(epsilon=4.0, batch_size=64), ctx)
    assert np.isfinite(info["epsilon"]) and 3.0 < info["epsilon"] <= 4.0 + 1e-6
    assert info["delta"] == pytest.approx(1 / (10 * N_MEMBERS)) and info["noise_multiplier"] > 0.5
    assert info["steps"] == 5 * -(-N_MEMBERS // 64)
    acc = (predict_logits(model, digits.x_test).argmax(1) == digits.y_test).mean()
    assert acc > 0.5  # chance is 0.1
    # A smaller budget means more noise, and the same config gives the same model.
    _, tight = dp_train(DPSGD(epsilon=1.0, batch_size=64), ctx)
    assert tight["noise_multiplier"] > info["noise_multiplier"] and tight["epsilon"] <= 1.0 + 1e-6
    again, _ = dp_train(DPSGD(epsilon=4.0, batch_size=64), ctx)
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_dp_sgd_converts_batchnorm_and_the_checkpoint_reloads(digits, tmp_path) -> None:  # noqa: ANN001
    pytest.importorskip("opacus")
    from privquant.artifacts import load_checkpoint, save_checkpoint
    from privquant.defenses.dp_sgd import DPSGD, dp_train

    x = digits.x_train[:128]  # 8x8 images: enough for ResNet-20's strides
    ctx = DefenseContext(x=x, y=digits.y_train[:128], x_reference=None, y_reference=None, num_classes=10,
                         train=TrainConfig(epochs=1, batch_size=32), seed=0, model_fn=model_factory("resnet20", 10))  # fmt: skip
    model, _ = dp_train(DPSGD(epsilon=8.0), ctx)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in model.modules())
    assert model_info(model).spec["norm"] == "group"
    save_checkpoint(tmp_path / "ck", model, {"model": model_info(model).spec})
    loaded, _ = load_checkpoint(tmp_path / "ck")
    np.testing.assert_array_equal(predict_logits(loaded, x), predict_logits(model, x))


def test_hamp_output_keeps_every_predicted_class_and_hides_confidence(digits) -> None:  # noqa: ANN001
    from privquant.defenses import HAMPOutput

    ctx = _context(digits, epochs=10)
    model = train_model(None, ctx)
    wrapped = apply_outputs([HAMPOutput(random_inputs=200)], model, ctx)
    x = digits.x_test
    raw, out = predict_logits(model, x), predict_logits(wrapped, x)
    assert (out.argmax(1) == raw.argmax(1)).all()  # every predicted class kept
    assert (np.argsort(-out, 1) == np.argsort(-raw, 1)).all()  # ... and the whole ranking
    p = np.exp(out)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    # The released confidence no longer tells members from held-out rows: members' top
    # probability is near 1 under the raw model, but drawn from random inputs when wrapped.
    members_raw = torch.from_numpy(predict_logits(model, ctx.x)).softmax(-1).max(-1).values.mean()
    members_out = np.exp(predict_logits(wrapped, ctx.x)).max(1).mean()
    held_out = np.exp(predict_logits(wrapped, digits.x_test)).max(1).mean()
    assert members_raw > 0.9 and abs(members_out - held_out) < 0.05
    # The same query always gets the same answer.
    np.testing.assert_array_equal(predict_logits(wrapped, x[:50]), out[:50])
