"""``privquant data``: find, download and inspect datasets."""

from __future__ import annotations

import argparse
import json


def _cmd_data_fetch(args: argparse.Namespace) -> int:
    from privquant.data import fetch_dataset, load_dataset

    where = fetch_dataset(args.name)
    ds = load_dataset(args.name)
    print(f"{args.name}: {len(ds.y_train)} train / {len(ds.y_test)} test rows, found at {where}")
    return 0


def _cmd_data_info(args: argparse.Namespace) -> int:
    from privquant.data import load_dataset

    ds = load_dataset(args.name)
    info = ds.info()
    info.pop("extra", None)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for k, v in info.items():
            print(f"{k:>12}: {v}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="find, download and inspect datasets")
    dsub = data.add_subparsers(dest="data_command", required=True)
    f = dsub.add_parser("fetch", help="make a dataset available locally (download if needed)")
    f.add_argument("name")
    f.set_defaults(func=_cmd_data_fetch)
    i = dsub.add_parser("info", help="sizes, shapes, classes and source of a dataset")
    i.add_argument("name", help="built-in name, or npz:PATH, csv:PATH, folder:PATH")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.set_defaults(func=_cmd_data_info)
