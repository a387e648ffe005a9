"""``privquant attack``: membership inference attacks on a saved signals file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from privquant.errors import PrivquantError


def _cmd_attack(args: argparse.Namespace) -> int:
    from privquant.artifacts import atomic_write_json
    from privquant.attacks import Signals, format_table, run_attacks

    if args.json and Path(args.json).is_dir():
        raise PrivquantError(f"--json: {args.json} is a folder; give a file path to write")
    signals = Signals.load(args.signals)
    try:
        targets = [int(t) for t in args.target.split(",")]
    except ValueError:
        raise PrivquantError(
            f"--target: expected model indices like 0 or 0,1,2, got {args.target!r}"
        ) from None
    res = run_attacks(
        signals, targets=targets, attacks=args.attacks, n_bootstrap=args.bootstrap, seed=args.seed
    )
    res["signals"] = {"path": str(Path(args.signals).resolve()), "models": signals.n_models,
                      "points": signals.n_points, "queries": signals.n_queries, "classes": signals.n_classes}  # fmt: skip
    print(format_table(res))
    if args.json:
        atomic_write_json(args.json, res)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser("attack", help="run membership inference attacks on a signals file")
    a.add_argument(
        "--signals",
        required=True,
        help="npz with logits [models, points, queries, classes], labels, keep",
    )
    a.add_argument("--target", default="0", help="target model index, or a comma-separated list")
    a.add_argument(
        "--attacks", default="all", help="'all' or a comma-separated list of attack names"
    )
    a.add_argument(
        "--bootstrap", type=int, default=200, help="bootstrap resamples for confidence intervals"
    )
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--json", help="write every metric to this JSON file")
    a.set_defaults(func=_cmd_attack)
