"""Run, report and demo: a whole audit from a YAML config."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from privquant.results import AuditResults


def _cmd_run(args: argparse.Namespace) -> int:
    from privquant.errors import ConfigError
    from privquant.pipeline.config import load_config
    from privquant.pipeline.run import run_audit

    only, hours = args.train_only, args.hours
    if hours is not None and (only is None or hours <= 0):
        raise ConfigError(f"--hours: {hours:g}; expected a positive time budget for --train-only "
                          "(an audit runs to its end)")  # fmt: skip
    config = load_config(args.config)
    pins = pins_flag(args.pin_precision)
    start = time.perf_counter()
    if only is not None:
        from privquant.pipeline.budget import BudgetReached
        from privquant.pipeline.run import train_only

        try:
            trained = train_only(config, args.out, only or None, hours=hours, pins=pins)
        except BudgetReached as e:
            print(f"{e}\nmodels only: the finished ones are in the cache "
                  f"({time.perf_counter() - start:.0f} s)")  # fmt: skip
            return 0
        for name, folders in trained.items():
            print(f"{name}: {len(folders)} models in {folders[0].parent if folders else '-'}")
        print(f"models only, finished in {time.perf_counter() - start:.0f} s; "
              f"`privquant run {args.config} --out {args.out}` audits them")  # fmt: skip
        return 0
    results = run_audit(config, args.out, pins=pins)
    _print_summary(results)
    print(f"\nreport: {Path(args.out).resolve() / 'report.html'} (and report.md); "
          f"finished in {time.perf_counter() - start:.0f} s")  # fmt: skip
    return 0


def pins_flag(values: list[str] | None) -> dict[str, dict] | None:
    """``--pin-precision VARIANT=PRECISION[+channels_last]`` flags as pins (none: None)."""
    if not values:
        return None
    from privquant.errors import ConfigError
    from privquant.pipeline.pins import parse_pin

    pins: dict[str, dict] = {}
    for text in values:
        name, pin = parse_pin(text)
        if pins.setdefault(name, pin) != pin:
            raise ConfigError(f"--pin-precision: {name} pinned twice, differently")
    return pins


def _print_summary(results: AuditResults) -> None:
    """The verdict, then one line per variant: worst case over attacks, pooled over targets."""
    from privquant.report.render import verdict
    from privquant.results import tradeoff_points

    for line in verdict(results):
        print(line.replace("**", "").replace("`", ""))
    points = {p.variant: p for p in tradeoff_points(results)}
    lead = next(iter(points.values())).lead_subset if points else "all"
    print(f"{'variant':<16} {'bits':>5} {'KiB':>8} {'test acc':>9}  {'worst TPR@1% FPR, ' + lead:<34} "
          "population TPR@0.1% FPR")  # fmt: skip
    for name, v in results.variants.items():
        acc = "–" if v.test_accuracy is None else f"{v.test_accuracy:.4f}"
        p = points.get(name)
        worst = "–" if p is None else f"{p.worst_1.text()} ({p.worst_1.attack})"
        population = "–" if p is None else p.population_01.text(2)
        print(
            f"{name:<16} {v.bits:>5.2f} {v.size_bytes / 1024:>8.1f} {acc:>9}  {worst:<34} {population}"
        )


def _cmd_report(args: argparse.Namespace) -> int:
    from privquant.report import render_report

    path = render_report(args.run_dir, args.run_dir)
    print(f"report: {path.resolve()}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from importlib.resources import files

    from privquant.cli import build_parser

    # Parsed like a typed `privquant run`, so every run flag has its default here too.
    config = str(files("privquant.pipeline") / ("demo.yaml" if args.full else "demo_quick.yaml"))
    out = args.out or ("runs/demo_full" if args.full else "runs/demo")
    return _cmd_run(build_parser().parse_args(["run", config, "--out", out]))


def add_parser(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("run", help="run a whole audit from a YAML config and write the report")
    r.add_argument("config", help="YAML config (see src/privquant/pipeline/demo.yaml)")
    r.add_argument("--out", required=True, help="run folder (reused to resume an interrupted run)")
    r.add_argument("--train-only", nargs="*", metavar="VARIANT", default=None,
                   help="only train (or find in the cache) the models of these variants (none named: "
                   "all) and stop: a study spread over sessions fills its cache this way")  # fmt: skip
    r.add_argument("--hours", type=float, default=None,
                   help="with --train-only: train within this much time, judged per step that lands "
                   "in the cache (a sub-teacher, a model): start no model unless the slowest step so "
                   "far fits, and stop inside one once its next step would not")  # fmt: skip
    r.add_argument("--pin-precision", action="append", metavar="VARIANT=PRECISION", default=None,
                   help="train, find and query VARIANT's population in this precision, not in what "
                   "precision: auto picks here, e.g. fp32=bf16+channels_last for models carried from a "
                   "bf16 host; recorded in OUT/precision.json, which later calls keep (repeatable)")  # fmt: skip
    r.set_defaults(func=_cmd_run)

    rep = sub.add_parser(
        "report", help="re-render RUN_DIR/report.{md,html} from RUN_DIR/results.json"
    )
    rep.add_argument("run_dir")
    rep.set_defaults(func=_cmd_report)

    d = sub.add_parser(
        "demo", help="the newcomer's demo: audit FP32 vs quantized models on Fashion-MNIST"
    )
    d.add_argument("--out", default=None, help="run folder (default runs/demo, runs/demo_full)")
    d.add_argument("--full", action="store_true",
                   help="the full demo (demo.yaml: twice the pool, PTQ 8/4/2 too; 37 min on a slow "
                   "2-core host) instead of the quick one (demo_quick.yaml: 5 min on a Zen 3)")  # fmt: skip
    d.set_defaults(func=_cmd_demo)
