"""Audit queries run in the fp32 layout measured faster for each model, the same in every process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from privquant.models import build_model
from privquant.signals import layout as lay
from privquant.signals import query_logits, query_views
from privquant.training import precision as prec
from privquant.training import predict_logits


@pytest.fixture
def timings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict:
    """Layout speeds chosen by the test; counts the timings; a private machine cache."""
    monkeypatch.setenv(prec.CACHE_ENV, str(tmp_path / "machine.json"))
    monkeypatch.setattr(lay, "CHOICES", {})
    monkeypatch.setattr(lay, "cpu_share", lambda clock: 1.0)  # the stub takes no time
    state = {"speeds": {lay.NCHW: 100.0, lay.CHANNELS_LAST: 130.0}, "calls": 0}

    def fake(model, xb, layout, seconds):  # noqa: ANN001, ANN202
        state["calls"] += 1
        return state["speeds"][layout]

    monkeypatch.setattr(lay, "rows_per_second", fake)
    return state


def _images(n: int = 40) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 3, 16, 16), dtype=np.uint8)


def test_the_faster_layout_is_chosen_once_per_machine(
    timings: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = build_model("small_cnn", (3, 16, 16), 4)
    assert lay.query_layout(model, _images()) == lay.CHANNELS_LAST and timings["calls"] == 2
    lay.CHOICES.clear()  # a new process reads the machine's decision, whatever it would time now
    timings["speeds"] = {lay.NCHW: 100.0, lay.CHANNELS_LAST: 50.0}
    assert lay.query_layout(model, _images()) == lay.CHANNELS_LAST and timings["calls"] == 2
    # Timed on a shared CPU, the first decision still stands for every later process: a change
    # would move a run's logits between its processes.
    timings["speeds"] = {lay.NCHW: 100.0, lay.CHANNELS_LAST: 130.0}
    shape = build_model("small_cnn", (3, 16, 16), 6)
    monkeypatch.setattr(lay, "cpu_share", lambda clock: 0.3)
    assert lay.query_layout(shape, _images()) == lay.CHANNELS_LAST and timings["calls"] == 4
    lay.CHOICES.clear()
    monkeypatch.setattr(lay, "cpu_share", lambda clock: 1.0)
    timings["speeds"] = {lay.NCHW: 100.0, lay.CHANNELS_LAST: 50.0}
    assert lay.query_layout(shape, _images()) == lay.CHANNELS_LAST and timings["calls"] == 4
    # Another model shape is its own decision; a near tie keeps the layout models are saved in.
    timings["speeds"] = {lay.NCHW: 100.0, lay.CHANNELS_LAST: 103.0}
    assert lay.query_layout(build_model("small_cnn", (3, 16, 16), 5), _images()) == lay.NCHW


def test_tables_are_not_timed(timings: dict) -> None:
    x = np.random.default_rng(0).random((40, 8), dtype=np.float32)
    assert lay.query_layout(build_model("mlp", (8,), 3), x) == lay.NCHW and timings["calls"] == 0


class _Flattens(nn.Module):
    """A user's model that ``.view``s its feature map: channels_last inputs break it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4 * 16 * 16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).view(len(x), -1))


def test_a_model_that_needs_nchw_gets_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(prec.CACHE_ENV, str(tmp_path / "machine.json"))
    monkeypatch.setattr(lay, "CHOICES", {})
    monkeypatch.setattr(lay, "SECONDS_PER_LAYOUT", 0.01)
    model = _Flattens()
    assert lay.query_layout(model, _images()) == lay.NCHW
    assert query_logits(model, _images(), layout=None).shape == (40, 1, 2)


def test_both_layouts_give_the_same_logits_and_leave_the_model_as_it_was() -> None:
    torch.manual_seed(0)
    model = build_model("resnet20", (3, 16, 16), 4).eval()
    x, views = _images(), query_views("image", 4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    nchw = predict_logits(model, x, views=views)
    last = predict_logits(model, x, views=views, channels_last=True)
    assert nchw.shape == last.shape == (40, 4, 4)
    np.testing.assert_allclose(last, nchw, atol=1e-4, rtol=1e-4)
    state = model.state_dict()
    assert all(torch.equal(before[k], v) and v.is_contiguous() for k, v in state.items())
    assert not model.training


def test_plan_prices_queries_in_the_layout_the_audit_queries_in(timings: dict) -> None:
    from privquant.pipeline.plan import _inference_speed

    model = build_model("small_cnn", (3, 16, 16), 4)
    assert _inference_speed(model, _images()) == 130.0  # the channels_last figure, not NCHW's
    timings["speeds"] = {lay.NCHW: 100.0, lay.CHANNELS_LAST: 50.0}
    assert _inference_speed(build_model("small_cnn", (3, 16, 16), 7), _images()) == 100.0
