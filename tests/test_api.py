"""The one-call defense of a user's own model: deploy, save, load back, audit what ships."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import privquant
from privquant.data import load_dataset
from privquant.errors import ConfigError, PrivquantError
from privquant.training import TrainConfig, predict_logits


class UserNet(nn.Module):
    """An architecture privquant's registry does not know."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 96), nn.ReLU())
        self.head = nn.Linear(96, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


CFG = TrainConfig(epochs=6, batch_size=32, optimizer="adam", lr=3e-3, weight_decay=0)


@pytest.fixture(scope="module")
def digits():  # noqa: ANN201
    return load_dataset("digits")


@pytest.fixture(scope="module")
def deployed(digits):  # noqa: ANN001, ANN201
    return privquant.defend(UserNet, train=(digits.x_train[:400], digits.y_train[:400]), bits=4,
                            train_config=CFG, seed=3)  # fmt: skip


def test_a_user_module_is_defended_saved_and_loaded_back_equal(
    deployed, digits, tmp_path: Path
) -> None:  # noqa: ANN001
    acc = deployed.evaluate(digits.x_test, digits.y_test)["accuracy"]
    assert acc > 0.6
    folder = deployed.save(tmp_path / "ship", onnx=True)
    loaded, manifest = privquant.load_quantized(folder, model=UserNet())
    assert manifest["model"] is None and manifest["size"]["avg_bits_per_quantized_weight"] <= 8
    np.testing.assert_allclose(predict_logits(loaded, digits.x_test), predict_logits(deployed.module, digits.x_test),
                               atol=1e-5)  # fmt: skip
    with pytest.raises(PrivquantError, match="pass a fresh instance of its architecture"):
        privquant.load_quantized(folder)


def test_the_audit_audits_the_deployed_model(deployed, digits) -> None:  # noqa: ANN001
    res = deployed.audit(nonmembers=(digits.x_train[400:800], digits.y_train[400:800]), n_shadows=2,
                         test=(digits.x_test, digits.y_test), attacks=["loss", "rmia"], n_bootstrap=0,
                         progress=False)  # fmt: skip
    assert isinstance(res, privquant.AuditResults) and set(res.variants) == {"fp32", "defended"}
    # Model 0 of the audited variant is rebuilt from the same members, recipe and seed: it is
    # the model that ships (same test accuracy to the last row).
    shipped = deployed.evaluate(digits.x_test, digits.y_test)["accuracy"]
    assert res.variants["defended"].per_model[0].test_accuracy == pytest.approx(shipped, abs=1e-9)


def test_recipes_and_inputs_are_checked_before_training(digits) -> None:  # noqa: ANN001
    x, y = digits.x_train[:50], digits.y_train[:50]
    with pytest.raises(ConfigError, match="train: 50 inputs and 40 labels"):
        privquant.defend(UserNet, train=(x, y[:40]))
    with pytest.raises(ConfigError, match="needs 1 defender reference rows, got 0"):
        privquant.defend(UserNet, train=(x, y), recipe=[{"method": "reference_distill"}])
    with pytest.raises(ConfigError, match="num_classes: 5, but the labels reach 9"):
        privquant.defend(UserNet, train=(x, y), num_classes=5)
    with pytest.raises(ConfigError, match="recipe: 'default' or a list of steps"):
        privquant.defend(UserNet, train=(x, y), recipe="strong")
