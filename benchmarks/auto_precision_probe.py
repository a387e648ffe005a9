"""Why a tiny model's ``precision: auto`` was a coin flip on a CPU without bf16 kernels.

Two parts, one thread (as the executor tests run the in-process audit):

1. ``--rounds`` timings of each candidate ``auto`` used to consider for the executor tests' MLP on
   digits (hidden 64, batch 32), each as ``choose_precision`` times it (0.3 s): how often bf16
   would have beaten fp32 by the 3% margin.
2. The executor tests' audit with the precision pinned to each of fp32 and bf16: the rmia
   findings' scores it reports, to match against a failing run's numbers.

    python benchmarks/auto_precision_probe.py [--rounds 20] [--out /tmp/auto_precision_probe]
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--out", default=None, help="run folders (default: a temporary folder)")
    args = p.parse_args()
    torch.set_num_threads(1)
    sys.path.insert(0, str(ROOT / "tests"))
    from privquant.data import load_dataset
    from privquant.machine import machine_info
    from privquant.models import build_model
    from privquant.pipeline import load_config, run_audit
    from privquant.training import precision as prec
    from privquant.training.trainer import to_model_input
    from test_workers import SMALL  # the config both executor tests compare

    ds = load_dataset("digits")
    model = build_model("mlp", ds.x_train.shape[1:], 10, **SMALL["model"]["options"])
    x = to_model_input(torch.as_tensor(ds.x_train[:64]))
    y = torch.as_tensor(ds.y_train[:64]).long()
    xb, yb, _ = prec.one_batch(x, y, SMALL["train"]["batch_size"])
    speeds: dict[str, list[float]] = {"bf16": [], "fp32": []}
    for _ in range(args.rounds):
        for name in speeds:
            candidate = prec.Candidate(name, False)
            speeds[name].append(round(prec.time_candidate(model, xb, yb, candidate, 0.3), 1))
    bf16_wins = sum(
        b > f * (1 + prec.MARGIN) for b, f in zip(speeds["bf16"], speeds["fp32"], strict=True)
    )

    out = Path(args.out or tempfile.mkdtemp(prefix="auto_precision_probe_"))
    scores = {}
    for precision in ("fp32", "bf16"):
        raw = copy.deepcopy(SMALL)
        raw["train"].update(precision=precision, channels_last=False)
        run_audit(load_config(raw), out / precision, progress=False)
        text = (out / precision / "results.json").read_text()
        scores[precision] = sorted(set(re.findall(r'"score": (0\.9994\d+)', text)))
    print(json.dumps({
        "images_per_second": speeds,
        "rounds_where_bf16_beat_fp32_by_the_margin": bf16_wins,
        "rounds": args.rounds,
        "rmia_scores_near_0_9994": scores,
        "cpu_has_fast_bf16": prec.cpu_has_fast_bf16(),
        "machine": machine_info(),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
