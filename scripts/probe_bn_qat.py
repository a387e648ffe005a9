"""Single-model probe (not an audit): 2-bit QAT of ResNet-20 on CIFAR-10 with BatchNorm folded
first vs kept live during fine-tuning (privquant.quant.bn_qat), same schedules.

    PRIVQUANT_DATA=../shared/datasets python scripts/probe_bn_qat.py

2,500 seeded training rows (all classes; the file is sorted by class), the ResNet-20 recipe of
configs/cifar10_resnet20_bn_qat.yaml, seed 0. Prints test accuracy on the full test set and
accuracy on the 2,500 rows trained on, and the time of each fine-tune.
"""

import json
import platform
import time

import numpy as np

from privquant.data import load_dataset
from privquant.quant import QuantConfig, calibration_batches, quantization_aware_training, quantize
from privquant.training import TrainConfig, evaluate, train_new_model

ds = load_dataset("cifar10")
members = np.random.default_rng(0).permutation(len(ds.x_train))[:2500]
x, y = ds.x_train[members], ds.y_train[members]
recipe = TrainConfig(epochs=20, batch_size=128, lr=0.1, momentum=0.9, weight_decay=5e-4,
                     schedule="onecycle", warmup_fraction=0.15, augment="flip")  # fmt: skip
rows = []


def record(name: str, model, seconds: float) -> None:  # noqa: ANN001
    row = {"variant": name, "test_accuracy": evaluate(model, ds.x_test, ds.y_test)["accuracy"],
           "member_accuracy": evaluate(model, x, y)["accuracy"], "seconds": round(seconds, 1)}  # fmt: skip
    rows.append(row)
    print(json.dumps(row), flush=True)


t = time.time()
fp32, _ = train_new_model("resnet20", x, y, 10, recipe, progress=False)
record("fp32", fp32, time.time() - t)
calib = calibration_batches(x)
cfg = QuantConfig(weight_bits=2)
record("ptq2 (no fine-tune)", quantize(fp32, cfg, calib), 0.0)
for batchnorm in ("fold", "train"):
    for epochs, lr in ((4, 0.003), (4, 0.01), (20, 0.01)):
        t = time.time()
        q, _ = quantization_aware_training(fp32, cfg, x, y, recipe.model_copy(update={"epochs": epochs, "lr": lr}),
                                           calib, progress=False, batchnorm=batchnorm)  # fmt: skip
        record(f"qat2 batchnorm={batchnorm} {epochs} ep lr {lr}", q, time.time() - t)
print(json.dumps({"machine": platform.processor() or platform.machine(), "rows": rows}))
