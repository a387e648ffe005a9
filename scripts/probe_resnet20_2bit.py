"""Single-model probe on ResNet-20 model 0 of the components run (not an audit).

    privquant run docs/results/cifar10_resnet20_components/config.yaml --out runs/r20_components
    python scripts/probe_resnet20_2bit.py [--qat]

1. Consistency: the audit's deployed privacy_rounding4 model 0, loaded back from its integer export, scored on
   the full test set and the reference rows, next to what the run recorded; then the same transform re-applied
   in memory to the same checkpoint (does the 62% of scripts/probe_rounding_resnet20.py reproduce?).
2. ``--qat``: 2-bit QAT schedules on model 0 (full test set accuracy, train accuracy on its members).
"""

import argparse
import json
import time
from pathlib import Path

import yaml

from privquant.artifacts import ArtifactCache, load_checkpoint
from privquant.data import load_dataset
from privquant.defenses import VariantConfig, apply_transforms
from privquant.membership import MembershipSplit
from privquant.pipeline.config import AuditConfig
from privquant.population.deploy import DeployJob, deploy_key, load_deployed
from privquant.population.jobs import TrainJob, context_for, job_key, model_factory
from privquant.training import evaluate

RUN = Path("runs/r20_components")
parser = argparse.ArgumentParser()
parser.add_argument("--qat", action="store_true")
args = parser.parse_args()

config = AuditConfig(**yaml.safe_load((RUN / "config.yaml").read_text()))
ds = load_dataset("cifar10")
split = MembershipSplit.load(RUN / "split.npz")
cache = ArtifactCache(RUN / "cache")
m = 0
train = config.train.model_copy(update={"seed": config.seed + m})
job = TrainJob(index=m, members=split.members(m), train=train, model="resnet20")
checkpoint = cache.path(job_key(job, ds, cache))
model, _ = load_checkpoint(checkpoint)
mem, ref = split.members(m), split.reference
ctx = context_for(ds, mem, ref, train, config.seed + m, model_factory("resnet20", 10, {}))
results = json.loads((RUN / "results.json").read_text())


def score(name: str, net, t: float = 0.0) -> None:
    test = evaluate(net, ds.x_test, ds.y_test)["accuracy"]
    test2k = evaluate(net, ds.x_test[:2000], ds.y_test[:2000])["accuracy"]
    train_acc = evaluate(net, ds.x_train[mem], ds.y_train[mem])["accuracy"]
    ref_acc = evaluate(net, ds.x_train[ref], ds.y_train[ref])["accuracy"]
    print(f"{name}: test {test:.4f} (first 2,000: {test2k:.4f}) members {train_acc:.4f} "
          f"reference {ref_acc:.4f} ({t:.0f} s)", flush=True)  # fmt: skip


score("fp32 checkpoint", model)
print("  run recorded:", results["variants"]["fp32"]["per_model"][m]["test_accuracy"])
variant = next(v for v in config.variants if v.name == "privacy_rounding4")
deploy = DeployJob(index=m, checkpoint=checkpoint, members=mem, train=train, seed=config.seed + m,
                   model="resnet20", transforms=tuple(variant.transform_steps), reference=ref)  # fmt: skip
deployed, _ = load_deployed(cache.path(deploy_key(deploy, cache)))
score("privacy_rounding4 as deployed (integers)", deployed)
rec = results["variants"]["privacy_rounding4"]["per_model"][m]
print("  run recorded:", rec["test_accuracy"], rec["defense_info"])
t = time.time()
again = apply_transforms(list(variant.transform_steps), model, ctx)
score("privacy_rounding4 re-applied in memory", again, time.time() - t)

if args.qat:
    for label, quant, epochs, lr in [
        ("qat2 4 ep lr 0.003 (the run's)", {"weight_bits": 2}, 4, 0.003),
        ("qat2 LSQ 4 ep lr 0.003", {"weight_bits": 2, "learn_scale": True}, 4, 0.003),
        ("qat2 LSQ 12 ep lr 0.003", {"weight_bits": 2, "learn_scale": True}, 12, 0.003),
        ("qat2 12 ep lr 0.01", {"weight_bits": 2}, 12, 0.01),
    ]:
        steps = [{"method": "qat", "quant": quant, "epochs": epochs, "lr": lr}]
        t = time.time()
        q = apply_transforms(VariantConfig(name="v", steps=steps).transform_steps, model, ctx)
        score(label, q, time.time() - t)
