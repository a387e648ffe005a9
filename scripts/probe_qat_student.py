"""Single-model probe (not an audit): where does the 4-bit step of the defense lose accuracy?

At size 3 the default recipe's FP32 student loses 0.67 points on average when QAT takes it to 4 bits on its
own outputs (74.60% -> 73.93%), while standard QAT at 4 bits on the true labels costs FP32 nothing (77.30% ->
77.30%). This takes one carried part-5 student (model 0 of a part-5 cache) and deploys it at 4 bits several
ways, each scored on the defender's reference rows (seen by no model and not used by the part-5 recipe, so a
validation set: the test rows stay for the audit). Accuracy only; what a change does to leakage needs the
audit, and ``targets: labels`` puts the members' hard labels back into training, which the recipe avoids.

Run with the study's code, whose QAT the audit will use (the worktree at 321ab66):

  cd ../wt_p2 && PRIVQUANT_DATA=/work/shared/datasets PYTHONPATH=src python ../main/scripts/probe_qat_student.py \\
      ../main/configs/cifar10_regime_12500_teachers8_fp32.yaml runs/cache_regime_12500_fp32 --out probe.jsonl

One line of JSON per point, appended as each finishes (a rerun skips the points already in ``--out``).
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

# Run as a script, its folder is on the path: one student lookup for both part-5 scripts.
from compare_tracks import script_commit, student_dirs

POINTS: list[tuple[str, dict]] = [
    ("ptq nearest (no training)", {"method": "ptq", "quant": {"weight_bits": 4}}),
    ("qat self 2 ep lr 1e-3 (the recipe)", {"method": "qat", "quant": {"weight_bits": 4}, "epochs": 2,
                                            "lr": 0.001, "targets": "self"}),
    ("qat self 2 ep lr 3e-3", {"method": "qat", "quant": {"weight_bits": 4}, "epochs": 2, "lr": 0.003,
                               "targets": "self"}),
    ("qat labels 2 ep lr 1e-3 (standard QAT's targets)", {"method": "qat", "quant": {"weight_bits": 4},
                                                          "epochs": 2, "lr": 0.001, "targets": "labels"}),
    ("qat self 4 ep lr 1e-3", {"method": "qat", "quant": {"weight_bits": 4}, "epochs": 4, "lr": 0.001,
                               "targets": "self"}),
]  # fmt: skip


def checkout_paired_interval() -> Callable[[np.ndarray, np.ndarray], tuple[float, float]]:
    """The exact (McNemar) paired accuracy interval of this script's checkout.

    The model code on the path is the study's pinned worktree, which predates that function; the
    metrics module needs only numpy and scipy, so it is loaded from this checkout by its file.
    """
    path = Path(__file__).resolve().parents[1] / "src" / "privquant" / "metrics" / "epsilon.py"
    spec = importlib.util.spec_from_file_location("checkout_epsilon", path)
    if spec is None or spec.loader is None:
        sys.exit(f"{path}: cannot load the paired accuracy interval")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.paired_accuracy_difference_interval


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("config", help="the part-5 config (its split gives model 0's members)")
    p.add_argument("cache", type=Path, help="the part-5 cache holding model 0's student")
    p.add_argument("--model", type=int, default=0, help="which model's student (default 0)")
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: beside a training run)"
    )
    p.add_argument("--out", type=Path, required=True, help="JSON lines, appended point by point")
    args = p.parse_args(argv)

    import torch

    from privquant.artifacts.checkpoint import load_checkpoint
    from privquant.defenses import VariantConfig
    from privquant.defenses.apply import apply_transforms
    from privquant.machine import machine_info
    from privquant.pipeline.config import load_config
    from privquant.pipeline.run import prepared_split
    from privquant.population.jobs import context_for, model_factory
    from privquant.training import predict_logits

    torch.set_num_threads(args.threads)
    # The model code's commit is the working directory's (machine_info's "commit"); this script's may differ.
    machine, commit = machine_info(), script_commit()
    paired_interval = checkout_paired_interval()
    config = load_config(args.config)
    ds, split = prepared_split(config)
    members = split.members(args.model)
    student_dir = student_dirs(args.cache).get(len(members))
    if student_dir is None:
        sys.exit(
            f"{args.cache}: no split_distill student with {len(members)} members (model {args.model})"
        )
    student, _ = load_checkpoint(student_dir)
    train = config.train.model_copy(update={"precision": "fp32", "channels_last": True,
                                            "seed": config.seed + args.model})  # fmt: skip
    ctx = context_for(ds, members, None, train, config.seed + args.model,
                      model_factory(config.model.name, ds.num_classes), None)  # fmt: skip
    x_val, y_val = ds.x_train[split.reference], ds.y_train[split.reference]

    def right(model: torch.nn.Module) -> np.ndarray:
        model.eval()
        return predict_logits(model, x_val, device="cpu").argmax(1) == y_val

    done = set()
    if args.out.exists():
        done = {
            json.loads(line)["point"] for line in args.out.read_text().splitlines() if line.strip()
        }
    base = right(student)
    print(
        f"student {student_dir.name[:12]}: {base.mean():.4f} on {len(y_val)} reference rows",
        flush=True,
    )
    for name, step in POINTS:
        if name in done:
            continue
        variant = VariantConfig(name="probe", steps=[step])
        start = time.perf_counter()
        deployed = apply_transforms(variant.transform_steps, copy.deepcopy(student), ctx)
        seconds = time.perf_counter() - start
        ok = right(deployed)
        low, high = paired_interval(ok, base)  # paired with the FP32 student on the same rows
        row = {"point": name, "step": step, "model": args.model, "student": student_dir.name,
               "validation_rows": len(y_val), "student_accuracy": float(base.mean()),
               "accuracy": float(ok.mean()), "change": float(ok.mean() - base.mean()),
               "change_low": low, "change_high": high,
               "rows_only_deployed_right": int((ok & ~base).sum()),
               "rows_only_student_right": int((base & ~ok).sum()),
               "seconds": round(seconds, 1), "threads": args.threads, "machine": machine,
               "script_commit": commit}  # fmt: skip
        print(json.dumps(row), flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
