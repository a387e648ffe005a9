"""``privquant plan``: what a run would still compute here, and about how long it takes."""

from __future__ import annotations

import argparse
import json


def _cmd_plan(args: argparse.Namespace) -> int:
    from privquant.cli.run import pins_flag
    from privquant.pipeline.config import load_config
    from privquant.pipeline.plan import plan_run

    plan = plan_run(load_config(args.config), args.out, pins=pins_flag(args.pin_precision))
    print(json.dumps(plan.to_dict(), indent=1) if args.json else plan.text())
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan",
        help="before a run: what it would train, deploy and query here (cached parts found), "
        "priced from this machine's measured speed",
    )
    p.add_argument("config", help="the audit config (YAML) the run would use")
    p.add_argument("--out", required=True, help="the run folder the run would write (its signals "
                   "are looked up there; the cache at cache_dir, or OUT/cache)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("--pin-precision", action="append", metavar="VARIANT=PRECISION", default=None,
                   help="as for run (OUT's recorded pins apply too; plan records nothing)")  # fmt: skip
    p.set_defaults(func=_cmd_plan)
