from __future__ import annotations

import pytest
import torch

from privquant.errors import ConfigError
from privquant.models import build_model, count_parameters
from privquant.models.info import model_info


@pytest.mark.parametrize(
    "name,shape,params",
    [
        ("small_cnn", [3, 32, 32], (0.5e6, 0.6e6)),
        ("resnet20", [3, 32, 32], (0.26e6, 0.28e6)),
        ("resnet18", [3, 32, 32], (11.1e6, 11.3e6)),
        ("small_cnn", [1, 28, 28], (0.3e6, 0.5e6)),
        ("resnet20", [1, 28, 28], (0.26e6, 0.28e6)),
        ("mlp", [600], (1.2e6, 1.4e6)),
    ],
)
def test_models_build_and_run(name: str, shape: list[int], params: tuple[float, float]) -> None:
    m = build_model(name, shape, 10)
    assert params[0] <= count_parameters(m) <= params[1]
    out = m.eval()(torch.rand(2, *shape))
    assert out.shape == (2, 10)
    assert model_info(m).spec["kwargs"]["input_shape"] == shape


def test_normalization_is_inside_the_model() -> None:
    m = build_model("mlp", [2], 2, mean=[0.5, 0.5], std=[0.25, 0.25], hidden=())
    lin = m[1][0]
    with torch.no_grad():
        lin.weight.copy_(torch.eye(2))
        lin.bias.zero_()
    assert torch.allclose(m(torch.tensor([[0.75, 0.5]])), torch.tensor([[1.0, 0.0]]))


def test_bad_model_requests() -> None:
    with pytest.raises(ConfigError, match="choose one of"):
        build_model("vgg", [3, 32, 32], 10)
    with pytest.raises(ConfigError, match="needs image input"):
        build_model("resnet20", [20], 2)
