from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import require_dataset
from privquant.data import load_dataset
from privquant.errors import ConfigError, PrivquantError
from privquant.quant import (
    QuantConfig,
    calibration_batches,
    export_quantized,
    load_quantized,
    quant_layers,
    quantization_aware_training,
    quantize,
)
from privquant.quant.export import pack, unpack
from privquant.quant.fake import level_range, weight_params
from privquant.training import TrainConfig, evaluate, predict_logits, train_new_model


@pytest.fixture(scope="module")
def digits_resnet():
    ds = load_dataset("digits")
    model, _ = train_new_model("resnet20", ds.x_train, ds.y_train, 10, TrainConfig(epochs=3, batch_size=64),
                               progress=False)  # fmt: skip
    return ds, model


@pytest.mark.parametrize("bits", [1.58, 2, 3, 4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
def test_levels_idempotence_and_clipping(bits: float, symmetric: bool) -> None:
    torch.manual_seed(0)
    layer = nn.Linear(64, 16)
    cfg = QuantConfig(weight_bits=bits, symmetric=symmetric, first_last_bits=None)
    q = quantize(nn.Sequential(layer), cfg)
    ql = quant_layers(q)["0"]
    w = ql.quantized_weight().detach()
    for row in w:  # at most 2^b levels per output channel (3 for ternary)
        assert len(torch.unique(row)) <= (3 if bits == 1.58 else 2 ** int(bits))
    # Idempotence: quantizing the quantized weights changes nothing.
    ql.layer.weight.data = w.clone()
    assert torch.equal(ql.quantized_weight().detach(), w)
    # Clipping: values far outside the range land on the extreme levels.
    qmin, qmax = level_range(bits, symmetric)
    big = torch.full_like(w, 1e6)
    ql.layer.weight.data = big
    assert torch.allclose(
        ql.quantized_weight().detach(), (qmax - ql.zero) * ql.scale.expand_as(big)
    )


def test_mse_calibration_beats_minmax_on_heavy_tails() -> None:
    torch.manual_seed(0)
    w = torch.randn(8, 256)
    w[:, 0] = 20  # one outlier per channel
    errs = {}
    for method in ("minmax", "mse"):
        s, z = weight_params(w, 4, True, True, method)
        deq = (torch.clamp(torch.round(w / s) + z, -8, 7) - z) * s
        errs[method] = float(((deq - w) ** 2).mean())
    assert errs["mse"] < errs["minmax"]


@pytest.mark.parametrize("nbits", [2, 3, 4, 8])
def test_pack_round_trip(nbits: int) -> None:
    codes = np.random.default_rng(0).integers(0, 2**nbits, 1001)
    packed = pack(codes, nbits)
    assert packed.nbytes == -(-1001 * nbits // 8)
    assert np.array_equal(unpack(packed, nbits, 1001), codes)


@pytest.mark.parametrize("cfg", [
    QuantConfig(weight_bits=4),
    QuantConfig(weight_bits=1.58, symmetric=True),
    QuantConfig(weight_bits=3, symmetric=False, granularity="per_tensor", calibration="percentile"),
    QuantConfig(weight_bits=8, act_bits=8),
])  # fmt: skip
def test_export_round_trip_is_bit_exact(tmp_path: Path, digits_resnet, cfg: QuantConfig) -> None:
    ds, model = digits_resnet
    q = quantize(model, cfg, calibration_batches(ds.x_train, 2))
    manifest = export_quantized(q, tmp_path / "exp")
    loaded, _ = load_quantized(tmp_path / "exp")
    for name, layer in quant_layers(q).items():
        assert torch.equal(layer.quantized_weight(), quant_layers(loaded)[name].quantized_weight())
    np.testing.assert_array_equal(predict_logits(q, ds.x_test), predict_logits(loaded, ds.x_test))
    size = manifest["size"]
    bits = 2 if cfg.weight_bits == 1.58 else cfg.weight_bits
    assert bits <= size["avg_bits_per_quantized_weight"] <= 8  # first/last layers stay at 8 bits
    assert bits == 8 or size["avg_bits_per_quantized_weight"] < 8
    assert size["total_bytes"] < size["fp32_bytes"]
    assert (tmp_path / "exp" / "quantized.safetensors").stat().st_size >= size[
        "packed_weight_bytes"
    ]


def test_eight_bit_ptq_keeps_accuracy(digits_resnet) -> None:
    ds, model = digits_resnet
    fp = evaluate(model, ds.x_test, ds.y_test)["accuracy"]
    q8 = quantize(model, QuantConfig(weight_bits=8, act_bits=8), calibration_batches(ds.x_train, 4))
    assert evaluate(q8, ds.x_test, ds.y_test)["accuracy"] >= fp - 0.005


@pytest.fixture(scope="module")
def fashion_cnn():
    ds = require_dataset("fashion-mnist")
    x, y = ds.x_train[:8000], ds.y_train[:8000]
    model, _ = train_new_model("small_cnn", x, y, 10, TrainConfig(epochs=4), progress=False)
    return ds, x, y, model


def _test_accuracy(ds, model) -> float:  # noqa: ANN001
    return evaluate(model, ds.x_test[:4000], ds.y_test[:4000])["accuracy"]


@pytest.mark.slow
def test_qat_recovers_low_bit_accuracy_on_fashion_mnist(fashion_cnn) -> None:
    """At 2 bits on every layer with min-max scales PTQ loses a lot (measured 84.6% -> 71.1%);
    QAT must win it back (measured 83.0%). A no-op QAT fails; at 4 bits it would not (PTQ alone
    is as good as FP32 there)."""
    ds, x, y, model = fashion_cnn
    fp = _test_accuracy(ds, model)
    cfg = QuantConfig(weight_bits=2, first_last_bits=None, calibration="minmax")
    ptq = _test_accuracy(ds, quantize(model, cfg))
    qat, _ = quantization_aware_training(
        model, cfg, x, y, TrainConfig(epochs=2, lr=0.01), progress=False
    )
    acc = _test_accuracy(ds, qat)
    assert acc > ptq + 0.05 and acc >= fp - 0.03, (fp, ptq, acc)
    q8 = quantize(model, QuantConfig(weight_bits=8, act_bits=8), calibration_batches(x, 4))
    assert _test_accuracy(ds, q8) >= fp - 0.005


@pytest.mark.slow
def test_lsq_beats_frozen_step_sizes_from_the_default_grid(fashion_cnn) -> None:
    """2-bit per-tensor weights on the MSE grid (the default calibration): one epoch of QAT with
    learned step sizes (LSQ) must beat the same epoch with them frozen; an LSQ whose step sizes do
    not learn would tie. Measured with fp32 training (benchmarks/lsq_init.py, 3 seeds, Zen 3):
    +1.07, +0.48, +0.90 points. From a min-max grid (a poor one at 2 bits) the two tie (-0.80,
    +0.50, -0.13): LSQ's step sizes learn at the paper's pace (gradient scaled by 1/sqrt(N * Qp)),
    too slowly to undo a grid twice too coarse in one epoch (docs/results/lsq_init.md), which is
    what the earlier form of this test (min-max, xfail on most hosts) asked of it."""
    ds, x, y, model = fashion_cnn
    accs = {}
    for lsq in (False, True):
        cfg = QuantConfig(weight_bits=2, first_last_bits=None, calibration="mse", granularity="per_tensor",
                          learn_scale=lsq)  # fmt: skip
        recipe = TrainConfig(epochs=1, lr=0.01, precision="fp32", channels_last=False)
        q, _ = quantization_aware_training(model, cfg, x, y, recipe, progress=False)
        accs[lsq] = _test_accuracy(ds, q)
    assert accs[True] > accs[False] + 0.0025, accs  # 10 of the 4,000 test rows


@pytest.mark.slow
def test_lsq_learns_the_step_size(digits_resnet) -> None:
    ds, model = digits_resnet
    cfg = QuantConfig(weight_bits=3, learn_scale=True)
    q, _ = quantization_aware_training(model, cfg, ds.x_train, ds.y_train, TrainConfig(epochs=1, batch_size=64, lr=0.01),
                                       progress=False)  # fmt: skip
    before = quantize(model, cfg)
    name = next(iter(quant_layers(q)))
    assert isinstance(quant_layers(q)[name].scale, nn.Parameter)
    assert not torch.equal(quant_layers(q)[name].scale.detach(), quant_layers(before)[name].scale)


@pytest.mark.slow
def test_adaround_reconstructs_better_than_nearest(digits_resnet) -> None:
    ds, model = digits_resnet
    calib = calibration_batches(ds.x_train, 2)
    nearest = quantize(model, QuantConfig(weight_bits=3), calib)
    learned = quantize(model, QuantConfig(weight_bits=3, rounding="adaround"), calib)
    ref = torch.from_numpy(predict_logits(model, ds.x_test))
    err = {k: float(((torch.from_numpy(predict_logits(m, ds.x_test)) - ref) ** 2).mean())
           for k, m in (("nearest", nearest), ("adaround", learned))}  # fmt: skip
    assert err["adaround"] < err["nearest"], err


def test_bad_configs_and_unsupported_layers() -> None:
    # Direct construction raises pydantic's ValidationError (a ValueError) carrying our message.
    with pytest.raises(ValueError, match="5.5 bits is not supported"):
        QuantConfig(weight_bits=5.5)
    with pytest.raises(ValueError, match=r"layer_bits\['x'\]"):
        QuantConfig(layer_bits={"x": 1})
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    with pytest.raises(
        ConfigError, match=r"unknown layers \['nope'\].*quantizable layers are \['0', '2'\]"
    ):
        quantize(model, QuantConfig(layer_bits={"nope": 4}))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        quantize(model, QuantConfig(weight_bits=4))
    assert any("1 (LayerNorm)" in str(x.message) for x in w)
    with pytest.raises(ConfigError, match="calibration data is required"):
        quantize(model, QuantConfig(act_bits=8))


def test_mixed_precision_map(digits_resnet) -> None:
    _, model = digits_resnet
    names = list(quant_layers(quantize(model, QuantConfig())))
    q = quantize(model, QuantConfig(weight_bits=4, layer_bits={names[3]: 2}))
    bits = {n: layer.bits for n, layer in quant_layers(q).items()}
    assert (
        bits[names[0]] == 8 and bits[names[-1]] == 8 and bits[names[3]] == 2 and bits[names[5]] == 4
    )


def test_onnx_runtime_matches(tmp_path: Path, digits_resnet) -> None:
    pytest.importorskip("onnxruntime")
    from privquant.quant.onnx_export import export_onnx, onnx_logits, onnx_session

    ds, model = digits_resnet
    q = quantize(model, QuantConfig(weight_bits=4), calibration_batches(ds.x_train, 2))
    export_onnx(q, tmp_path / "q.onnx", ds.input_shape)
    ours, ort = (
        predict_logits(q, ds.x_test),
        onnx_logits(onnx_session(tmp_path / "q.onnx"), ds.x_test),
    )
    np.testing.assert_allclose(ort, ours, atol=1e-4, rtol=1e-4)
    qa = quantize(model, QuantConfig(weight_bits=8, act_bits=8), calibration_batches(ds.x_train, 2))
    export_onnx(qa, tmp_path / "qa.onnx", ds.input_shape)
    ours, ort = (
        predict_logits(qa, ds.x_test),
        onnx_logits(onnx_session(tmp_path / "qa.onnx"), ds.x_test),
    )
    assert (ours.argmax(1) == ort.argmax(1)).mean() >= 0.99  # activation rounding may flip on ties
    assert np.abs(ours - ort).max() < 0.25
    with pytest.raises(PrivquantError, match="8-bit activations only"):
        export_onnx(
            quantize(model, QuantConfig(act_bits=4), calibration_batches(ds.x_train, 1)),
            tmp_path / "x.onnx",
            ds.input_shape,
        )


@pytest.mark.slow
@pytest.mark.parametrize("symmetric", [True, False])
def test_batchnorm_live_qat_deploys_exactly_what_it_trained(digits_resnet, tmp_path: Path, symmetric: bool) -> None:  # fmt: skip
    """QAT with BatchNorm live, then folded: the deployed (folded, exported, reloaded) model
    gives the trained network's eval outputs, on the trained integer codes, also for channels
    whose BatchNorm gain is negative (folding flips their sign)."""
    from privquant.quant.bn_qat import (
        QuantConvBatchNorm,
        fold_trained_batchnorm,
        prepare_batchnorm_qat,
    )
    from privquant.training import Trainer

    ds, model = digits_resnet
    model = copy.deepcopy(model)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():  # negative gains on some channels: the sign-aware grid must hold
        bns[1].weight[:3] *= -1
        bns[4].weight[::2] *= -1
    cfg = QuantConfig(weight_bits=2, symmetric=symmetric)
    live = prepare_batchnorm_qat(model, cfg)
    wrapped = {n: m for n, m in live.named_modules() if isinstance(m, QuantConvBatchNorm)}
    assert len(wrapped) == len(bns)  # every conv->BN pair of the ResNet, BatchNorm kept
    Trainer(TrainConfig(epochs=1, batch_size=64, lr=0.01)).fit(
        live, ds.x_train, ds.y_train, progress=False
    )
    assert any(m.bn.weight[0] < 0 for m in wrapped.values())
    deployed = fold_trained_batchnorm(live, cfg)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in deployed.modules())
    for name, m in wrapped.items():  # the same integer codes, on the folded grid
        q = m.quant
        sign = torch.sign(m.bn.weight.detach()).view(-1, 1, 1, 1)
        trained_codes = torch.clamp(
            torch.round(q.layer.weight.detach() * sign / q.scale) + q.zero, q.qmin, q.qmax
        )
        layer = quant_layers(deployed)[name]
        folded_codes = torch.round(layer.quantized_weight().detach() / layer.scale + layer.zero)
        assert torch.equal(trained_codes, folded_codes), name
    ref = predict_logits(live.eval(), ds.x_test)
    np.testing.assert_allclose(predict_logits(deployed, ds.x_test), ref, atol=2e-3, rtol=1e-3)
    export_quantized(deployed, tmp_path / "export")
    loaded, _ = load_quantized(tmp_path / "export")
    np.testing.assert_allclose(predict_logits(loaded, ds.x_test), ref, atol=2e-3, rtol=1e-3)


@pytest.mark.slow
def test_batchnorm_live_qat_recovers_2bit_resnet_where_folded_qat_cannot(digits_resnet) -> None:
    """ResNet-20 at 2 bits, one short fine-tune: with BatchNorm folded first the network cannot
    re-centre its activations; with it live it can (measured on digits: FP32 97.3%, folded
    80.2%, live 98.2%; on CIFAR-10 members 51.2% / 20.0% / 51.3%)."""
    ds, model = digits_resnet
    fp = evaluate(model, ds.x_test, ds.y_test)["accuracy"]
    cfg = QuantConfig(weight_bits=2)
    train = TrainConfig(epochs=2, batch_size=64, lr=0.01)
    accs = {}
    for mode in ("fold", "train"):
        q, _ = quantization_aware_training(
            model, cfg, ds.x_train, ds.y_train, train, progress=False, batchnorm=mode
        )
        accs[mode] = evaluate(q, ds.x_test, ds.y_test)["accuracy"]
    assert accs["train"] > accs["fold"] + 0.05 and accs["train"] >= fp - 0.1, (fp, accs)


@pytest.mark.slow
def test_batchnorm_live_qat_falls_back_to_folding_where_codes_could_not_be_kept(
    digits_resnet,
) -> None:
    """A per-tensor grid cannot absorb a per-channel BatchNorm gain: QAT then folds first, says
    so, and the QAT defense's default is the live mode."""
    from privquant.defenses.quantization import QAT
    from privquant.quant.bn_qat import prepare_batchnorm_qat

    _, model = digits_resnet
    with pytest.warns(UserWarning, match="per-channel"):
        q = prepare_batchnorm_qat(model, QuantConfig(weight_bits=2, granularity="per_tensor"))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in q.modules())
    assert QAT(quant=QuantConfig(weight_bits=2)).batchnorm == "train"
