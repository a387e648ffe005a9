"""DP-SGD as a tuned baseline (issue 25): augmentation multiplicity and the noise-multiplier point."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from privquant.data import load_dataset
from privquant.defenses import DefenseContext
from privquant.errors import ConfigError
from privquant.population import model_factory
from privquant.training import TrainConfig, predict_logits

pytest.importorskip("opacus")


@pytest.fixture(scope="module")
def digits():  # noqa: ANN201
    return load_dataset("digits")


def _context(ds, augment: str = "crop", epochs: int = 8) -> DefenseContext:  # noqa: ANN001
    # Crop only: a mirrored digit is another symbol.
    return DefenseContext(
        x=ds.x_train[:400], y=ds.y_train[:400], x_reference=None, y_reference=None, num_classes=10,
        train=TrainConfig(epochs=epochs, batch_size=64, optimizer="adam", lr=3e-3, weight_decay=0, augment=augment,
                          crop_padding=1 if "crop" in augment else None),
        seed=0, model_fn=model_factory("mlp", 10, {"hidden": [64]}),
    )  # fmt: skip


def test_each_row_gets_one_clipped_gradient_averaged_over_its_copies() -> None:
    """The optimizer's update equals (1/B) * sum_i clip(mean_k g_ik), computed by hand."""
    from opacus import GradSampleModule

    from privquant.defenses.dp_sgd import _optimizer_class

    torch.manual_seed(0)
    rows, copies, clip = 6, 3, 0.05
    x = torch.randn(rows * copies, 5)  # row i's copies at i*copies ... i*copies + copies - 1
    y = torch.arange(rows).repeat_interleave(copies) % 4
    net = nn.Linear(5, 4)
    reference = nn.Linear(5, 4)
    reference.load_state_dict(net.state_dict())

    wrapped = GradSampleModule(net, loss_reduction="mean")
    opt = _optimizer_class()(torch.optim.SGD(net.parameters(), lr=1.0), noise_multiplier=0.0,
                             max_grad_norm=clip, expected_batch_size=rows, loss_reduction="mean")  # fmt: skip
    opt.augment_multiplicity = copies
    nn.functional.cross_entropy(wrapped(x), y).backward()
    opt.step()
    wrapped._close()

    expected = [torch.zeros_like(p) for p in reference.parameters()]
    for i in range(rows):
        grads = []
        for k in range(copies):
            j = i * copies + k
            reference.zero_grad()
            nn.functional.cross_entropy(reference(x[j : j + 1]), y[j : j + 1]).backward()
            grads.append([p.grad.clone() for p in reference.parameters()])
        mean = [torch.stack(g).mean(0) for g in zip(*grads, strict=True)]
        norm = torch.sqrt(sum((g**2).sum() for g in mean))
        factor = min(1.0, clip / (float(norm) + 1e-6))
        for e, g in zip(expected, mean, strict=True):
            e += factor * g / rows
    with torch.no_grad():
        for p, q, e in zip(net.parameters(), reference.parameters(), expected, strict=True):
            torch.testing.assert_close(q - p, e, atol=1e-6, rtol=1e-4)  # SGD with lr 1: the update


def test_the_trainer_puts_a_rows_copies_next_to_each_other(digits) -> None:  # noqa: ANN001
    """The optimizer averages consecutive groups of K: the trainer must lay the copies out so,
    each copy augmented anew."""
    from privquant.training.objectives import CrossEntropy
    from privquant.training.trainer import Trainer

    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    class Recording(CrossEntropy):
        def __call__(self, logits, targets, *, model, indices):  # noqa: ANN001, ANN204
            seen.append((indices.clone(), logits.detach().clone()))
            return super().__call__(logits, targets, model=model, indices=indices)

    ctx = _context(digits, epochs=1)
    trainer = Trainer(ctx.train.model_copy(update={"precision": "fp32"}), objective=Recording(),
                      poisson_sampling=True, augment_multiplicity=3)  # fmt: skip
    trainer.fit(ctx.fresh_model(), ctx.x, ctx.y, progress=False)
    for indices, logits in seen:
        groups = indices.reshape(-1, 3)
        assert (groups == groups[:, :1]).all()  # each row three times in a row
        copies = logits.reshape(-1, 3, logits.shape[1])
        assert not torch.allclose(copies[:, 0], copies[:, 1])  # ... each copy augmented anew
    with pytest.raises(ValueError, match="augment: none"):
        Trainer(TrainConfig(augment="none"), augment_multiplicity=2)


def test_multiplicity_and_noise_multiplier_train_and_account(digits) -> None:  # noqa: ANN001
    from privquant.defenses.dp_sgd import DPSGD, dp_train

    ctx = _context(digits)
    model, info = dp_train(DPSGD(noise_multiplier=0.5, augment_multiplicity=4, batch_size=64), ctx)
    assert info["noise_multiplier"] == 0.5 and info["augment_multiplicity"] == 4
    # The accounting is that of the noise and sampling alone: copies add no privacy cost.
    _, single = dp_train(DPSGD(noise_multiplier=0.5, batch_size=64), ctx)
    assert info["epsilon"] == pytest.approx(single["epsilon"]) and info["epsilon"] > 8
    acc = (predict_logits(model, digits.x_test).argmax(1) == digits.y_test).mean()
    assert acc > 0.5  # chance is 0.1
    again, _ = dp_train(DPSGD(noise_multiplier=0.5, augment_multiplicity=4, batch_size=64), ctx)
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_bad_dp_settings_are_refused_before_training(digits) -> None:  # noqa: ANN001
    from pydantic import ValidationError

    from privquant.defenses.dp_sgd import DPSGD, dp_train

    with pytest.raises(ValidationError, match="not both"):
        DPSGD(epsilon=8.0, noise_multiplier=1.0)
    with pytest.raises(ValidationError, match="noise_multiplier"):
        DPSGD(noise_multiplier=0.0)
    with pytest.raises(ConfigError, match="augment_multiplicity: 2 .*augment is none"):
        dp_train(DPSGD(augment_multiplicity=2), _context(digits, augment="none"))
    assert np.isfinite(DPSGD().epsilon)


def test_expanded_weights_give_the_per_example_gradients_hooks_give(digits) -> None:  # noqa: ANN001
    from privquant.defenses.dp_sgd import DPSGD, dp_train, per_example_module

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3)
    )
    x, y = torch.randn(5, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1])
    samples = {}
    for way in ("hooks", "expanded_weights"):
        wrapped = per_example_module(net, way)
        nn.functional.cross_entropy(wrapped(x), y).backward()
        samples[way] = [p.grad_sample.clone() for p in net.parameters()]
        for p in net.parameters():
            p.grad, p.grad_sample = None, None
        wrapped._close()
    assert samples["hooks"][0].shape == (5, 4, 1, 3, 3)  # one gradient per example
    for a, b in zip(samples["hooks"], samples["expanded_weights"], strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    # A whole DP-SGD training (Poisson batches, two augmented copies per row): the same model
    # to float precision, the same accounting.
    ctx = _context(digits, epochs=2)
    hooks = DPSGD(noise_multiplier=0.5, batch_size=64, augment_multiplicity=2)
    a, info_a = dp_train(hooks, ctx)
    b, info_b = dp_train(hooks.model_copy(update={"per_example": "expanded_weights"}), ctx)
    assert info_a == info_b
    for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-4, rtol=1e-3)
    with pytest.raises(
        ConfigError, match=r"per_example: expanded_weights cannot compute 1 \(PReLU\)"
    ):
        per_example_module(nn.Sequential(nn.Linear(3, 3), nn.PReLU()), "expanded_weights")
