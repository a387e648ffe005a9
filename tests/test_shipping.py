"""What is audited is what ships: output steps live in the export; exports never mix or clobber."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from privquant.cli import main
from privquant.data import load_dataset
from privquant.quant import load_quantized
from privquant.training import predict_logits

STEPS = "[{method: ptq, quant: {weight_bits: 4}}, {method: output_coarsening, levels: 2}]"


@pytest.fixture(scope="module")
def ck(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ck") / "ck"
    assert main(["train", "--data", "digits", "--model", "mlp", "--epochs", "3", "--train-size", "300",
                 "--seed", "1", "--out", str(out)]) == 0  # fmt: skip
    return out


def _json(capsys: pytest.CaptureFixture[str]) -> dict:
    return json.loads(capsys.readouterr().out)


def test_output_steps_are_in_the_export_and_its_onnx_graph(
    ck: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("onnxruntime")
    from privquant.quant.onnx_export import onnx_logits, onnx_session

    capsys.readouterr()
    out = tmp_path / "o"
    assert main(["defend", str(ck), "--steps", STEPS, "--train-size", "300", "--seed", "1", "--onnx",
                 "--out", str(out)]) == 0  # fmt: skip
    printed = _json(capsys)
    ds = load_dataset("digits")
    shipped, _ = load_quantized(out)
    logits = predict_logits(shipped, ds.x_test)
    # Two levels: every released probability is 0, 1/2 or 1 (up to the argmax tie-break).
    probs = np.exp(logits)
    assert np.all(np.min(np.abs(probs[..., None] - np.array([0.0, 0.5, 1.0])), axis=-1) < 1e-4)
    assert float((logits.argmax(1) == ds.y_test).mean()) == pytest.approx(printed["test_accuracy"])
    onnx = onnx_logits(onnx_session(out / "model.onnx"), ds.x_test)
    assert np.allclose(np.exp(onnx), probs, atol=1e-4)
    assert main(["eval", str(out), "--data", "digits", "--json"]) == 0
    assert _json(capsys)["test_accuracy"] == pytest.approx(printed["test_accuracy"])


def test_hamp_output_travels_with_a_float_export(ck: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    capsys.readouterr()
    out = tmp_path / "h"
    assert main(["defend", str(ck), "--steps", "[{method: hamp_output, random_inputs: 50}]", "--train-size",
                 "300", "--seed", "1", "--out", str(out)]) == 0  # fmt: skip
    printed = _json(capsys)
    assert (out / "outputs.safetensors").is_file()
    assert main(["eval", str(out), "--data", "digits", "--json"]) == 0
    assert _json(capsys)["test_accuracy"] == pytest.approx(printed["test_accuracy"])


def test_an_export_never_overwrites_its_source_or_keeps_stale_files(
    ck: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = {p.name: p.read_bytes() for p in ck.iterdir()}
    assert main(["defend", str(ck), "--steps", STEPS, "--train-size", "300", "--seed", "1",
                 "--out", str(ck)]) == 2  # fmt: skip
    assert "is the input checkpoint" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in ck.iterdir()} == before
    out = tmp_path / "o"
    assert main(["quantize", str(ck), "--bits", "2", "--train-size", "300", "--seed", "1", "--onnx",
                 "--out", str(out)]) == 0  # fmt: skip
    assert (out / "model.onnx").is_file()
    assert main(["defend", str(ck), "--steps", "[{method: output_coarsening, levels: 2}]", "--train-size",
                 "300", "--seed", "1", "--out", str(out)]) == 0  # fmt: skip
    names = {p.name for p in out.iterdir()}
    assert "model.onnx" not in names and "manifest.json" not in names  # the 2-bit export is gone
    assert {"model.safetensors", "meta.json", "outputs.json"} <= names


def test_int8_onnx_that_cannot_carry_output_steps_is_refused_before_work(
    ck: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["defend", str(ck), "--steps", STEPS, "--train-size", "300", "--seed", "1", "--onnx-int8",
                 "--out", str(tmp_path / "i")]) == 2  # fmt: skip
    assert "--onnx-int8: the int8 graph cannot carry the output steps" in capsys.readouterr().err
    assert not (tmp_path / "i").exists()


def test_defend_uses_the_rows_the_checkpoint_records(
    ck: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["defend", str(ck), "--steps", "[{method: ptq, quant: {weight_bits: 4}}]",
                 "--out", str(tmp_path / "d")]) == 0  # fmt: skip
    printed = _json(capsys)
    assert (printed["train_rows"], printed["train_rows_seed"]) == (
        300,
        1,
    )  # ck: --train-size 300 --seed 1
    assert main(["defend", str(ck), "--steps", "[{method: ptq, quant: {weight_bits: 4}}]", "--train-size", "200",
                 "--out", str(tmp_path / "e")]) == 2  # fmt: skip
    assert "--train-size 200:" in capsys.readouterr().err and not (tmp_path / "e").exists()


PLUGIN = """
from torch import nn
from privquant.models import register_model


@register_model("shipping_user_mlp", images_only=False)
def shipping_user_mlp(shape, num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, num_classes))
"""


def test_defend_a_users_own_model_and_data_from_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ds = load_dataset("digits")
    np.savez(
        tmp_path / "mine.npz",
        x_train=ds.x_train,
        y_train=ds.y_train,
        x_test=ds.x_test,
        y_test=ds.y_test,
    )
    (tmp_path / "my_model.py").write_text(PLUGIN)
    capsys.readouterr()
    assert main(["defend", "--data", f"npz:{tmp_path / 'mine.npz'}", "--plugin", str(tmp_path / "my_model.py"),
                 "--model", "shipping_user_mlp", "--train-config", "{epochs: 20, batch_size: 32, optimizer: adam, lr: 0.003}",
                 "--train-size", "500", "--bits", "4", "--out", str(tmp_path / "o")]) == 0  # fmt: skip
    printed = _json(capsys)
    loaded, _ = load_quantized(tmp_path / "o")  # the plugin registered the architecture
    x_test = load_dataset(f"npz:{tmp_path / 'mine.npz'}").x_test
    acc = float((predict_logits(loaded, x_test).argmax(1) == ds.y_test).mean())
    assert acc == pytest.approx(printed["test_accuracy"]) and acc > 0.5
