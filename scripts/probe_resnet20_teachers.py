"""Single-model probe (not an audit): does the default's accuracy cost on ResNet-20 shrink with
more sub-teachers or a higher temperature? Test accuracy of the split-distilled FP32 student.

    PRIVQUANT_DATA=../shared/datasets python scripts/probe_resnet20_teachers.py

One seeded draw of 2,500 members and 2,500 reference rows from CIFAR-10 (the file is sorted by
class, so rows are drawn by permutation), the ResNet-20 recipe of configs/cifar10_resnet20_bn_qat.yaml,
seed 0. Teacher outputs are cached under runs/probe_teachers_cache, so temperature variants reuse
them. Accuracy only: leakage needs the audit (a shadow population), which this probe does not run.
"""

import json
import time

import numpy as np

from privquant.artifacts import ArtifactCache
from privquant.data import load_dataset
from privquant.defenses import DEFENSES
from privquant.defenses.distillation import SplitDistill
from privquant.population.jobs import context_for, model_factory
from privquant.training import TrainConfig, evaluate

ds = load_dataset("cifar10")
rows = np.random.default_rng(0).permutation(len(ds.x_train))
members, reference = np.sort(rows[:2500]), np.sort(rows[2500:5000])
recipe = TrainConfig(epochs=20, batch_size=128, lr=0.1, momentum=0.9, weight_decay=5e-4,
                     schedule="onecycle", warmup_fraction=0.15, augment="flip")  # fmt: skip
ctx = context_for(ds, members, reference, recipe, 0, model_factory("resnet20", 10),
                  cache=ArtifactCache("runs/probe_teachers_cache"), identity={"probe": "teachers"})  # fmt: skip


def test_acc(model) -> float:  # noqa: ANN001
    return round(evaluate(model, ds.x_test, ds.y_test)["accuracy"], 4)


t = time.time()
fp32 = ctx.train_fresh(ctx.x, ctx.y, recipe)
print(json.dumps({"variant": "fp32", "test_accuracy": test_acc(fp32), "seconds": round(time.time() - t)}), flush=True)  # fmt: skip
for teachers, temperature in ((4, 1.0), (4, 2.0), (8, 1.0)):
    t = time.time()
    config = SplitDistill(teachers=teachers, temperature=temperature)
    student = DEFENSES["split_distill"].handler(config, ctx)
    print(json.dumps({"variant": f"split_distill teachers={teachers} T={temperature}",
                      "test_accuracy": test_acc(student), "seconds": round(time.time() - t)}), flush=True)  # fmt: skip
