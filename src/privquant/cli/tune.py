"""``privquant tune``: a train-stage defense's hyperparameters, chosen on reference rows."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from privquant.cli.common import _at_least, yaml_flag


def _cmd_tune(args: argparse.Namespace) -> int:
    from privquant.pipeline import load_config
    from privquant.pipeline.tune import tune_step

    summary = tune_step(load_config(args.config), yaml_flag(args.step, "--step", dict),
                        yaml_flag(args.grid, "--grid", dict), args.validation_rows, args.out,
                        model_index=args.model_index)  # fmt: skip

    def accuracy(row: dict) -> str:
        lo, hi = row["validation_ci"]
        return f"{row['validation_accuracy']:.4f} [{lo:.3f}, {hi:.3f}]"

    plain = summary["plain"]
    print(f"{accuracy(plain)}  no defense  ({plain['seconds']:.0f} s)")
    for row in summary["points"]:
        varied = {k: row["step"][k] for k in summary["grid"]}
        info = row["defense_info"] or {}
        notes = f"  epsilon {info['epsilon']:.3g}" if "epsilon" in info else ""
        if row["accuracy_cost_ci"] is not None:
            lo, hi = row["accuracy_cost_ci"]
            notes += f"  cost {row['accuracy_cost_vs_plain']:+.4f} [{lo:+.3f}, {hi:+.3f}] paired"
        cost = row["recipe_cost_vs_plain"]
        recipe = "" if cost is None else f"; recipe from scratch {cost:.1f}x no defense"
        print(f"{accuracy(row)}  {json.dumps(varied)}{notes}  "
              f"({row['seconds']:.0f} s as run, {row['seconds_vs_plain']:.1f}x{recipe})")  # fmt: skip
    print(
        f"(validation accuracy on {summary['validation_rows']:,} reference rows, exact 95% interval)"
    )
    print(f"best: {json.dumps(summary['best']['step'])} -> {Path(args.out) / 'tune.json'}")
    if len(summary["sweep"]) > len(summary["points"]):
        best = summary["sweep"][0]
        print(f"sweep ({len(summary['sweep'])} points recorded in {args.out}, earlier calls' too): best "
              f"{json.dumps(best['step'])} at {best['validation_accuracy']:.4f}")  # fmt: skip
    for row in summary["sweep"][1:]:
        if row["behind_best_ci"] is not None:
            lo, hi = row["behind_best_ci"]
            resolved = "resolved" if lo > 0 else "not resolved"
            print(f"  best - {json.dumps(row['step'])}: [{lo:+.3f}, {hi:+.3f}] paired, {resolved}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser(
        "tune",
        help="tune a train-stage defense (e.g. DP-SGD) on a validation split of the reference rows",
    )
    t.add_argument("config", help="the audit config whose model, recipe and members are tuned for")
    t.add_argument("--step", required=True,
                   help="the step, YAML (or a file), e.g. '{method: dp_sgd, epsilon: 8}'")  # fmt: skip
    t.add_argument("--grid", required=True,
                   help="values to try per field, YAML (or a file), e.g. '{lr: [1, 2, 4], max_grad_norm: [0.5, 1]}'")  # fmt: skip
    t.add_argument("--validation-rows", type=_at_least(1), default=1000,
                   help="reference rows held out to score each point (the rest stay the defense's)")  # fmt: skip
    t.add_argument("--model-index", type=_at_least(0), default=0,
                   help="the population model whose members, seed and recipe are used")  # fmt: skip
    t.add_argument("--out", required=True, help="folder: one cached JSON per point, and tune.json")
    t.set_defaults(func=_cmd_tune)
