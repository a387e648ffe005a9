from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import privquant
from privquant.cli import main


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
    assert 0 <= summary["test_accuracy"] <= 1 and (tmp_path / "ck" / "model.safetensors").is_file()
