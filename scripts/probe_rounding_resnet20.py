"""Single-model probe: privacy-aware rounding on ResNet-20 target 0 of the CIFAR-10 defense run.

    privquant run docs/results/cifar10_resnet20_defense/config.yaml --out runs/r20_defense
    python scripts/probe_rounding_resnet20.py

Not an audit (no shadows, no LiRA/RMIA): test accuracy on the full test set (its first version scored
the first 2,000 test rows, which are two classes of this class-sorted file) and the loss-attack AUC of
1,000 members vs 1,000 pool non-members of model 0, for PTQ and privacy_rounding at 4/3/2 bits.
"""

import glob
import json
import time
from pathlib import Path

import numpy as np

from privquant.artifacts import load_checkpoint
from privquant.data import load_dataset
from privquant.defenses import DefenseContext, VariantConfig, apply_transforms, internal_audit
from privquant.membership import MembershipSplit
from privquant.population import model_factory
from privquant.training import TrainConfig, evaluate

ds = load_dataset("cifar10")
sp = MembershipSplit.load("runs/r20_defense/split.npz")
folder = None
for f in glob.glob("runs/r20_defense/cache/*/*/meta.json"):
    m = json.loads(Path(f).read_text())
    if (
        m.get("defense") is None
        and m.get("model", {}).get("name") == "resnet20"
        and m["train"]["seed"] == 0
        and m["n_members"] == len(sp.members(0))
    ):
        folder = f.rsplit("/", 1)[0]
model, meta = load_checkpoint(folder)
mem = sp.members(0)
ref = sp.reference
nonmem = np.setdiff1d(sp.pool, mem)[:1000]
ctx = DefenseContext(
    x=ds.x_train[mem],
    y=ds.y_train[mem],
    x_reference=ds.x_train[ref],
    y_reference=ds.y_train[ref],
    num_classes=10,
    train=TrainConfig(**meta["train"]),
    seed=0,
    model_fn=model_factory("resnet20", 10, {}),
)
xt, yt = ds.x_test, ds.y_test  # the whole test set: the file is sorted by class


def show(name, q, t):
    a = internal_audit(
        q,
        (ds.x_train[mem[:1000]], ds.y_train[mem[:1000]]),
        (ds.x_train[nonmem], ds.y_train[nonmem]),
    )
    print(
        f"{name}: test {evaluate(q, xt, yt)['accuracy']:.4f} loss-AUC members vs pool non-members {a['auc']:.3f} ({t:.0f}s)",
        flush=True,
    )


show("fp32", model, 0)
for steps in [
    [{"method": "ptq", "quant": {"weight_bits": 4}}],
    [{"method": "privacy_rounding", "quant": {"weight_bits": 4}}],
    [{"method": "ptq", "quant": {"weight_bits": 3}}],
    [{"method": "privacy_rounding", "quant": {"weight_bits": 3}}],
    [{"method": "privacy_rounding", "quant": {"weight_bits": 2}}],
]:
    t = time.time()
    q = apply_transforms(VariantConfig(name="v", steps=steps).transform_steps, model, ctx)
    show(f"{steps[0]['method']} {steps[0]['quant']['weight_bits']}", q, time.time() - t)
