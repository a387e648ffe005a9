from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import privquant
from privquant.cli import main
from privquant.models.info import model_info


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and privquant.__version__ in capsys.readouterr().out
    out = subprocess.run(
        [sys.executable, "-m", "privquant", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "data" in out.stdout and "train" in out.stdout


def test_data_info_json_on_user_npz(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "d.npz"
    np.savez(p, x_train=np.zeros((6, 4), np.float32), y_train=np.array([0, 1] * 3),
             x_test=np.zeros((2, 4), np.float32), y_test=np.array([0, 1]))  # fmt: skip
    assert main(["data", "info", f"npz:{p}", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["train_size"] == 6 and info["kind"] == "tabular" and info["input_shape"] == [4]


def test_bad_dataset_is_a_clear_error_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data", "info", f"npz:{tmp_path / 'nope.npz'}"]) == 2
    err = capsys.readouterr().err
    assert "nope.npz" in err and "file not found" in err and "Traceback" not in err


def test_train_writes_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(
        [
            "train",
            "--data",
            "digits",
            "--model",
            "small_cnn",
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "ck"),
        ]
    )
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    from privquant.artifacts import load_checkpoint
    from privquant.data import load_dataset
    from privquant.training import evaluate

    ds = load_dataset("digits")
    model, meta = load_checkpoint(tmp_path / "ck")
    # The printed accuracy is the saved model's, as the library computes it.
    assert summary["test_accuracy"] == evaluate(model, ds.x_test, ds.y_test)["accuracy"]
    assert (
        summary["test_accuracy"] > 0.2 and meta["model"]["name"] == "small_cnn"
    )  # 1 epoch; chance is 0.1


def test_data_fetch_finds_a_builtin(capsys: pytest.CaptureFixture[str]) -> None:
    from privquant.data import load_dataset

    assert main(["data", "fetch", "digits"]) == 0
    ds = load_dataset("digits")
    assert (
        f"digits: {len(ds.y_train)} train / {len(ds.y_test)} test rows" in capsys.readouterr().out
    )


@pytest.mark.slow
def test_signals_then_attack_match_the_library(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from privquant.attacks import Signals, run_attacks
    from privquant.membership import MembershipSplit

    sig = tmp_path / "s.npz"
    assert main(["signals", "--data", "digits", "--model", "mlp", "--models", "4", "--pool", "300", "--epochs", "5",
                 "--queries", "3", "--cache", str(tmp_path / "cache"), "--out", str(sig)]) == 0  # fmt: skip
    s = Signals.load(sig)
    split = MembershipSplit.load(tmp_path / "s.split.npz")
    assert s.logits.shape == (4, 300, 3, 10) and np.array_equal(s.keep, split.keep)
    capsys.readouterr()
    assert main(["attack", "--signals", str(sig), "--target", "0,1", "--attacks", "loss,rmia_online",
                 "--bootstrap", "0", "--json", str(tmp_path / "a.json")]) == 0  # fmt: skip
    written = json.loads((tmp_path / "a.json").read_text())
    ours = run_attacks(s, [0, 1], "loss,rmia_online", n_bootstrap=0, progress=False)
    for a in ("loss", "rmia_online"):
        assert written["attacks"][a]["mean"]["auc"] == ours["attacks"][a]["mean"]["auc"]


@pytest.mark.slow
def test_quantize_eval_and_defend_match_the_library(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from privquant.data import load_dataset
    from privquant.defenses.recipes import default_recipe
    from privquant.quant import load_quantized
    from privquant.training import evaluate

    ds = load_dataset("digits")
    ck = tmp_path / "ck"
    assert main(["train", "--data", "digits", "--model", "mlp", "--epochs", "30", "--optimizer", "adam", "--lr",
                 "0.003", "--train-size", "600", "--out", str(ck)]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["quantize", str(ck), "--method", "ptq", "--bits", "4", "--train-size", "600", "--out",
                 str(tmp_path / "q4")]) == 0  # fmt: skip
    q = json.loads(capsys.readouterr().out)
    model, manifest = load_quantized(tmp_path / "q4")
    assert q["test_accuracy"] == evaluate(model, ds.x_test, ds.y_test)["accuracy"]
    assert q["size"] == manifest["size"] and q["steps"][0]["quant"]["weight_bits"] == 4
    assert main(["eval", str(tmp_path / "q4"), "--data", "digits", "--json"]) == 0
    e = json.loads(capsys.readouterr().out)
    assert (
        e["test_accuracy"] == q["test_accuracy"]
        and e["size_bytes"] == manifest["size"]["total_bytes"]
    )
    # The default MIA-defense recipe at 2 bits, with 100 defender reference rows held out.
    assert main(["defend", str(ck), "--bits", "2", "--train-size", "600", "--reference-size", "100",
                 "--out", str(tmp_path / "d2")]) == 0  # fmt: skip
    d = json.loads(capsys.readouterr().out)
    assert [s["method"] for s in d["steps"]] == [s["method"] for s in default_recipe(2)]
    defended, manifest = load_quantized(tmp_path / "d2")
    # The defense retrained with the checkpoint's own recipe (30 epochs of Adam), not the QAT knobs.
    assert d["test_accuracy"] == evaluate(defended, ds.x_test, ds.y_test)["accuracy"] > 0.7
    assert manifest["size"]["avg_bits_per_quantized_weight"] < 4


@pytest.mark.slow
def test_run_report_and_compare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    cfg = {"name": "cli", "data": {"name": "digits", "pool_size": 300, "reference_size": 0},
           "model": {"name": "mlp", "options": {"hidden": [64]}}, "train": {"epochs": 5, "batch_size": 32},
           "population": {"n_models": 3, "queries": 1}, "variants": [{"name": "fp32"}],
           "attacks": ["loss"], "targets": [0], "bootstrap": 0}  # fmt: skip
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    for run in ("a", "b"):
        assert main(["run", str(tmp_path / "c.yaml"), "--out", str(tmp_path / run)]) == 0
    out = capsys.readouterr().out
    assert "report:" in out and (tmp_path / "a" / "report.html").is_file()
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert "0 of" in capsys.readouterr().out  # two runs of one config: identical numbers
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["changed"] == []


def test_demo_runs_the_packaged_config(monkeypatch: pytest.MonkeyPatch) -> None:
    import privquant.cli.run as cli_run

    seen = {}
    monkeypatch.setattr(cli_run, "_cmd_run", lambda args: seen.update(vars(args)) or 0)
    assert main(["demo", "--out", "somewhere"]) == 0
    assert seen["out"] == "somewhere" and seen["config"].endswith("pipeline/demo_quick.yaml")
    assert seen["train_only"] is None and seen["hours"] is None  # a whole audit
    assert seen["pin_precision"] is None
    from privquant.pipeline import load_config

    quick = load_config(seen["config"])
    assert main(["demo", "--full"]) == 0  # the full demo, in its own run folder
    assert seen["out"] == "runs/demo_full" and seen["config"].endswith("pipeline/demo.yaml")
    full = load_config(seen["config"])
    assert (quick.name, full.name) == ("demo-fashion-mnist-quick", "demo-fashion-mnist")
    # The quick demo is the full one made smaller, not another protocol: the same model, recipe,
    # population, attacks and targets, and each of its variants exactly as the full demo has it.
    for part in ("train", "population", "attacks", "targets", "bootstrap", "seed"):
        assert getattr(quick, part) == getattr(full, part), part
    assert quick.model.name == full.model.name  # at half width
    assert quick.data.canaries.kind == full.data.canaries.kind
    assert quick.data.pool_size < full.data.pool_size
    full_variants = {v.name: v for v in full.variants}
    assert [v.name for v in quick.variants] == ["fp32", "qat4", "qat2", "defended4", "defended2"]
    assert all(v == full_variants[v.name] for v in quick.variants)


@pytest.mark.slow
def test_defend_with_audit_compares_fp32_qat_and_the_defense(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from privquant.results import AuditResults

    ck = tmp_path / "ck"
    assert main(["train", "--data", "digits", "--model", "mlp", "--epochs", "20", "--optimizer", "adam", "--lr",
                 "0.003", "--train-size", "500", "--out", str(ck)]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["defend", str(ck), "--bits", "4", "--train-size", "500", "--audit", "--audit-shadows", "4",
                 "--out", str(tmp_path / "d")]) == 0  # fmt: skip
    summary = json.loads(capsys.readouterr().out)
    res = AuditResults.load(tmp_path / "d" / "audit")
    assert list(res.variants) == ["fp32", "qat4", "defended"]
    assert (tmp_path / "d" / "audit" / "report.html").is_file()
    assert res.split["members_per_model"][0] == 500  # the checkpoint's own training rows
    # The defense leaks less than FP32 and standard QAT under the strongest attack on FP32.
    attack = summary["audit"]["attack"]
    auc = {n: v.attacks[attack].mean["auc"] for n, v in res.variants.items()}
    # Measured on a Zen 3 host: 0.566 vs 0.621 / 0.627 (rmia_online; at 40 epochs 0.541 vs 0.572 /
    # 0.578, lira): the shadows retrain the checkpoint's recipe, so its epochs set the test's time.
    assert auc["defended"] < min(auc["fp32"], auc["qat4"]), auc


def test_bad_cli_input_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from privquant.attacks import Signals

    s = Signals(
        np.zeros((3, 10, 1, 2), np.float32), np.zeros(10, np.int64), np.zeros((3, 10), bool)
    )
    s.save(tmp_path / "s.npz")
    assert main(["attack", "--signals", str(tmp_path / "s.npz"), "--target", "abc"]) == 2
    assert "--target: expected model indices" in capsys.readouterr().err
    assert main(["attack", "--signals", str(tmp_path / "s.npz"), "--json", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # argparse: usage line + one error line, rc 2
        main(["train", "--train-size", "-5", "--out", str(tmp_path / "x")])
    assert e.value.code == 2 and "expected a count >= 0, got -5" in capsys.readouterr().err


def test_unexpected_errors_are_one_line_with_rc_2_and_debug_shows_the_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"name: \xff\xfe\n")  # not UTF-8
    assert main(["run", str(bad), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("privquant: error:") and "Traceback" not in err[0]
    with pytest.raises(Exception):  # noqa: B017 (any: --debug re-raises the original error)
        main(["--debug", "run", str(bad), "--out", str(tmp_path / "r")])


@pytest.mark.parametrize("command", [
    ["train", "--data", "digits", "--model", "mlp", "--epochs", "50"],
    ["run", "src/privquant/pipeline/demo.yaml"],
])  # fmt: skip
def test_an_unusable_out_is_refused_before_any_work(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "taken"
    a_file.write_text("keep me")
    assert main([*command, "--out", str(a_file)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"privquant: error: --out {a_file}: is a file; expected a folder"]
    assert a_file.read_text() == "keep me"
    assert main([*command, "--out", str(a_file / "below")]) == 2  # a file where a folder must go
    assert "not a writable folder" in capsys.readouterr().err


def test_integer_onnx_export_runs_on_integer_kernels_at_the_same_accuracy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("onnxruntime")
    import onnx
    import onnxruntime as ort

    ck = tmp_path / "ck"
    assert main(["train", "--data", "digits", "--model", "small_cnn", "--epochs", "15", "--train-size", "1000",
                 "--out", str(ck)]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["quantize", str(ck), "--method", "ptq", "--bits", "4", "--train-size", "1000", "--onnx-int8",
                 "--out", str(tmp_path / "q4")]) == 0  # fmt: skip
    q = json.loads(capsys.readouterr().out)
    # 8-bit activations on top of the 4-bit weights cost at most a point on these 449 test rows.
    assert (
        abs(q["onnx_int8"]["test_accuracy"] - q["test_accuracy"]) <= 0.01
        and q["test_accuracy"] > 0.8
    )
    # ONNX Runtime turns every conv and the classifier into integer kernels.
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(q["onnx_int8"]["path"], opts, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert (
        ops.count("QLinearConv") == 2
        and ops.count("QGemm") == 2
        and "Conv" not in ops
        and "Gemm" not in ops
    )


def test_bad_inputs_end_in_one_line_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    from privquant.models import build_model
    from privquant.quant import QuantConfig, export_quantized, quantize

    np.save(tmp_path / "bare.npy", np.zeros(3))
    model = build_model("mlp", (1, 8, 8), 10, hidden=[16])
    q = quantize(model, QuantConfig(weight_bits=4, first_last_bits=None), [torch.rand(8, 1, 8, 8)])
    export_quantized(q, tmp_path / "q")
    tensors = tmp_path / "q" / "quantized.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:40])  # a truncated export
    cases = [
        (
            ["attack", "--signals", str(tmp_path / "bare.npy"), "--target", "0"],
            "not an .npz archive",
        ),
        (["eval", str(tmp_path / "q"), "--data", "digits"], "cannot read the quantized tensors"),
        # A digits model (8x8 inputs) evaluated on 28x28 images: a shape error, one line.
        (["eval", str(tmp_path / "ck"), "--data", "fashion-mnist"], "RuntimeError"),
    ]
    from privquant.artifacts import save_checkpoint

    save_checkpoint(tmp_path / "ck", model, {"model": model_info(model).spec, "dataset": "digits"})
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0] and "Traceback" not in err[0], (argv, err)


def test_a_full_disk_is_one_line_and_leaves_no_partial_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import os

    real_replace = os.replace

    def full_disk(src, dst):  # noqa: ANN001, ANN202
        if str(dst).endswith("model.safetensors"):
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real_replace(src, dst)

    import privquant.artifacts.atomic as atomic

    monkeypatch.setattr(atomic.os, "replace", full_disk)
    out = tmp_path / "ck"
    assert (
        main(["train", "--data", "digits", "--model", "mlp", "--epochs", "1", "--out", str(out)])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the training progress lines
    assert err.startswith("privquant: error: OSError") and "No space left on device" in err
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]  # no half-written file
    assert not (out / "model.safetensors").exists()


def test_more_bad_inputs_are_one_line_naming_the_flag_or_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json as _json

    assert main(["train", "--data", "digits", "--model", "mlp", "--epochs", "0"]) == 2
    assert capsys.readouterr().err.strip() == (
        "privquant: error: --epochs: Input should be greater than or equal to 1 (got 0)"
    )
    ck = tmp_path / "ck"
    assert (
        main(["train", "--data", "digits", "--model", "mlp", "--epochs", "1", "--out", str(ck)])
        == 0
    )
    capsys.readouterr()
    (ck / "meta.json").write_text(_json.dumps([1, 2]))
    assert main(["eval", str(ck), "--data", "digits"]) == 2
    assert "meta.json: expected a JSON object, got list" in capsys.readouterr().err
    q = tmp_path / "q"
    (q).mkdir()
    (q / "manifest.json").write_text('{"model": {"name": ')
    (q / "quantized.safetensors").write_bytes(b"")
    assert main(["eval", str(q), "--data", "digits"]) == 2
    assert "manifest.json: not valid JSON" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["quantize", str(ck), "--method", "calibrate", "--out", str(tmp_path / "c")])
    assert "invalid choice: 'calibrate'" in capsys.readouterr().err
    from privquant.errors import ConfigError
    from privquant.pipeline import load_config

    with pytest.raises(ConfigError, match="seed: Input should be greater than or equal to 0"):
        load_config({"seed": -1, "data": {"name": "digits"}, "model": {"name": "mlp"}})


def test_cli_defaults_are_the_config_defaults() -> None:
    """Flags that set a config field take its default, choices and help from the field."""
    import argparse

    from privquant.cli import CONFIG_FLAGS, build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    covered = {(prog.split()[-1], flag) for prog, flag, _, _ in CONFIG_FLAGS}
    assert {("train", "--epochs"), ("train", "--lr"), ("train", "--augment"), ("signals", "--models"),
            ("signals", "--pool"), ("signals", "--epochs"), ("signals", "--queries")} <= covered  # fmt: skip
    for prog, flag, model, field in CONFIG_FLAGS:
        action = next(a for a in commands[prog.split()[-1]]._actions if flag in a.option_strings)
        assert action.default == model.model_fields[field].default, (prog, flag)


def test_yaml_flags_are_one_line_naming_the_flag_or_its_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Every flag that takes YAML text or a file (tune --step/--grid, defend --steps/--train-config)
    # goes through one parser: broken YAML or the wrong shape is one line with exit code 2.
    config = tmp_path / "c.yaml"
    config.write_text("data: {name: digits}\nmodel: {name: mlp}\n")
    bad = tmp_path / "grid.yaml"
    bad.write_text("{lr: [1, 2\n")
    cases = [
        (["tune", str(config), "--step", "{method: [", "--grid", "{lr: [1]}"], "--step: not valid YAML"),
        (["tune", str(config), "--step", "{method: dp_sgd}", "--grid", str(bad)], f"--grid ({bad}): not valid YAML"),
        (["tune", str(config), "--step", "[1, 2]", "--grid", "{lr: [1]}"], "--step: expected a mapping, got [1, 2]"),
        (["defend", "--data", "digits", "--model", "mlp", "--train-config", "{epochs: [", "--out", str(tmp_path / "d")],
         "--train-config: not valid YAML"),
        (["defend", "--data", "digits", "--model", "mlp", "--train-config", "[1]", "--out", str(tmp_path / "d")],
         "--train-config: expected a mapping of TrainConfig fields"),
        (["defend", "--data", "digits", "--model", "mlp", "--steps", "{method: [", "--out", str(tmp_path / "d")],
         "--steps: not valid YAML"),
    ]  # fmt: skip
    for argv, message in cases:
        assert main(argv + ["--out", str(tmp_path / "o")] if argv[0] == "tune" else argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, (argv, err)
    assert not (tmp_path / "o").exists() and not (tmp_path / "d").exists()


def test_a_time_budget_belongs_to_train_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("data: {name: digits}\nmodel: {name: mlp}\n")
    for extra in (["--hours", "2"], ["--train-only", "--hours", "0"]):
        assert main(["run", str(config), "--out", str(tmp_path / "r"), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert "--hours:" in err and "expected a positive time budget for --train-only" in err
    assert not (tmp_path / "r").exists()
    # Spent before the first model: nothing trains, and saying so is the expected outcome (exit 0).
    config.write_text("data: {name: digits, pool_size: 300, reference_size: 0, population_size: 100, "
                      "test_size: 200}\nmodel: {name: mlp}\n")  # fmt: skip
    argv = ["run", str(config), "--out", str(tmp_path / "r"), "--train-only", "--hours", "1e-9"]
    assert main(argv) == 0
    assert "time budget: stopped after 0 jobs" in capsys.readouterr().out
