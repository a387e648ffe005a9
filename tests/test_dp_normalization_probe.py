"""The DP normalization probe's plugin model (docs/results/dp_tune.md, session 16): ResNet-20 with
GroupNorm and weight-standardized convolutions, whose per-example gradients must be exact."""

from __future__ import annotations

import copy
import hashlib
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

pytest.importorskip("opacus")

PLUGIN = Path(__file__).resolve().parents[1] / "configs" / "plugins" / "resnet20_gnws.py"


@pytest.fixture(scope="module")
def gnws():  # noqa: ANN201
    from privquant.pipeline.config import load_plugins

    load_plugins([str(PLUGIN)], PLUGIN.parent)  # as a config naming it would
    return sys.modules["privquant_plugin_" + hashlib.sha256(str(PLUGIN).encode()).hexdigest()[:16]]


def test_the_probe_model_standardizes_every_convolution_and_has_no_batchnorm(gnws) -> None:  # noqa: ANN001
    net = gnws.resnet20_gnws([3, 32, 32], 10)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(isinstance(m, gnws.WSConv2d) for m in convs)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    w_hat, _ = convs[0].standardized()
    torch.testing.assert_close(
        w_hat.mean(dim=(1, 2, 3)), torch.zeros(len(w_hat)), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        w_hat.std(dim=(1, 2, 3), unbiased=False), torch.ones(len(w_hat)), atol=1e-3, rtol=0
    )


def test_per_example_gradients_through_the_standardization_are_exact(gnws) -> None:  # noqa: ANN001
    # Opacus' convolution rule, then the standardization's Jacobian, against autograd on each
    # example alone (float64, so only the rule's mistakes would show).
    from opacus import GradSampleModule

    torch.manual_seed(0)
    net = gnws.resnet20_gnws([3, 8, 8], 5).double()
    for m in net.modules():
        if getattr(m, "inplace", False):
            m.inplace = False
    reference = copy.deepcopy(net)
    x, y = torch.randn(4, 3, 8, 8, dtype=torch.double), torch.tensor([0, 1, 2, 3])
    wrapped = GradSampleModule(net, loss_reduction="sum")
    nn.functional.cross_entropy(wrapped(x), y, reduction="sum").backward()
    for i in range(4):
        loss = nn.functional.cross_entropy(reference(x[i : i + 1]), y[i : i + 1], reduction="sum")
        grads = torch.autograd.grad(loss, list(reference.parameters()))
        for p, g in zip(net.parameters(), grads, strict=True):
            torch.testing.assert_close(p.grad_sample[i], g, rtol=1e-9, atol=1e-12)
    wrapped._close()
