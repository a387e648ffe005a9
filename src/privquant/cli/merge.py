"""``privquant merge``: one results.json and report from audits run in parts (split by variants)."""

from __future__ import annotations

import argparse
from pathlib import Path


def _cmd_merge(args: argparse.Namespace) -> int:
    from privquant.report import render_report
    from privquant.results import AuditResults, merge_results

    merged = merge_results([AuditResults.load(r) for r in args.runs], names=list(args.runs))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    merged.save(out / "results.json")
    report = render_report(merged, out)
    print(
        f"{len(merged.variants)} variants ({', '.join(merged.variants)}) -> {out / 'results.json'}, {report}"
    )
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser(
        "merge",
        help="merge audits of the same data, split and attacks that ran different variants",
    )
    m.add_argument("runs", nargs="+", help="run folders or results.json files (two or more)")
    m.add_argument("--out", required=True, help="folder for the merged results.json and report")
    m.set_defaults(func=_cmd_merge)
