from __future__ import annotations

import atexit
import gzip
import io
import os
import pickle
import shutil
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))

# The machine's precision and worker decisions are timed and cached per user: a test run on a busy
# machine must neither read a decision another job distorted nor leave one behind for later runs.
# One file for the whole session (worker processes inherit it), as a fresh CI machine has.
_MACHINE_CACHE = tempfile.mkdtemp(prefix="privquant-tests-")
atexit.register(shutil.rmtree, _MACHINE_CACHE, True)
os.environ["PRIVQUANT_MACHINE_CACHE"] = str(Path(_MACHINE_CACHE) / "precision.json")


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own cache and data roots; nothing leaks between tests."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("PRIVQUANT_CACHE", str(cache))
    monkeypatch.setenv("PRIVQUANT_DATA", str(tmp_path / "data"))
    return cache


def write_idx(path: Path, arr: np.ndarray, compress: bool) -> Path:
    """Write ``arr`` (uint8) as an IDX file, gzip-compressed or raw."""
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def write_mnist_like(
    folder: Path, n_train: int = 40, n_test: int = 10, compress: bool = True, seed: int = 0
):
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for stem, arr in arrays.items():
        write_idx(folder / stem, arr, compress)
    return arrays


def _pickled_batch(data: np.ndarray, labels: list[int], label_key: bytes) -> bytes:
    # Same structure as the official archive: bytes keys, uint8 array [N, 3072], list labels.
    return pickle.dumps({b"batch_label": b"x", label_key: labels, b"data": data}, protocol=2)


def write_cifar10_archive(path: Path, n_per_batch: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    """A tiny ``cifar-10-python.tar.gz`` in the official layout."""
    rng = np.random.default_rng(seed)
    members: dict[str, bytes] = {}
    xs, ys = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        y = rng.integers(0, 10, n_per_batch).tolist()
        members[name] = _pickled_batch(x, y, b"labels")
        xs.append(x)
        ys.append(y)
    names = [
        b"airplane",
        b"automobile",
        b"bird",
        b"cat",
        b"deer",
        b"dog",
        b"frog",
        b"horse",
        b"ship",
        b"truck",
    ]
    members["batches.meta"] = pickle.dumps({b"label_names": names, b"num_vis": 3072}, protocol=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return {
        "x_train": np.concatenate(xs[:5]).reshape(-1, 3, 32, 32),
        "y_train": np.concatenate([np.asarray(y) for y in ys[:5]]),
        "x_test": xs[5].reshape(-1, 3, 32, 32),
        "y_test": np.asarray(ys[5]),
    }


def write_image_folder(
    root: Path, classes=("cat", "dog"), n: int = 3, size=(8, 8), mode="RGB", seed=0
):
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
                Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(
                    root / split / c / f"{i:04d}.png"
                )
    return root


def require_dataset(name: str):
    """Load a real dataset; skip when absent unless PRIVQUANT_REQUIRE_DATA is set (as in CI)."""
    import os

    from privquant.data import load_dataset
    from privquant.errors import DatasetError

    try:
        return load_dataset(name)
    except DatasetError as e:
        if os.environ.get("PRIVQUANT_REQUIRE_DATA"):
            raise
        pytest.skip(f"{name} not available: {e}")


REPORTED_METRICS = (
    "accuracy",
    "precision",
    "recall",
    "f1",
    "auc",
    "tpr@1%fpr",
    "tpr@0.1%fpr",
    "tpr@0.01%fpr",
    "advantage",
)


def assert_reports_every_metric(metrics: dict) -> None:
    """One attack-on-one-target entry carries every reported metric and its confidence interval."""
    for key in REPORTED_METRICS:
        assert key in metrics and key in metrics["ci"], key


# The recipe of the runs that compare executors (test_workers, test_scale_out). Pinned: `auto`
# decides per thread count (1 thread for the in-process run, the parent's 2 for the pool), so a
# timing draw could change the numbers (docs/results/auto_precision_flake.md).
EXECUTOR_TRAIN = {"epochs": 10, "batch_size": 32, "optimizer": "adam", "lr": 0.003,
                  "precision": "fp32", "channels_last": False}  # fmt: skip


def result_numbers(run: Path) -> dict:
    """A run's results.json without what legitimately differs between two runs of one config
    (timings, machine, the config's spelling, per-attack wall time)."""
    import json

    data = json.loads((run / "results.json").read_text())
    for k in ("timings_seconds", "machine", "config"):
        data.pop(k)
    for v in data["variants"].values():
        for a in v["attacks"].values():
            for t in a["per_target"].values():
                t.pop("seconds")
    return data
