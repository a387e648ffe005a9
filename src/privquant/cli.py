"""The ``privquant`` command."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import privquant
from privquant.errors import PrivquantError


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


def _cmd_train(args: argparse.Namespace) -> int:
    from privquant.artifacts import save_checkpoint
    from privquant.data import load_dataset
    from privquant.training import TrainConfig, evaluate, train_new_model

    ds = load_dataset(args.data)
    n = min(args.train_size or len(ds.y_train), len(ds.y_train))
    cfg = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, optimizer=args.optimizer,
                      augment=args.augment, seed=args.seed, label_smoothing=args.label_smoothing)  # fmt: skip
    print(
        f"training {args.model} on {n} rows of {ds.name} for {cfg.epochs} epochs ...",
        file=sys.stderr,
    )
    model, result = train_new_model(args.model, ds.x_train[:n], ds.y_train[:n], ds.num_classes, cfg)
    test = evaluate(model, ds.x_test, ds.y_test)
    train = evaluate(model, ds.x_train[:n], ds.y_train[:n])
    summary = {
        "dataset": ds.name,
        "dataset_sha256": ds.checksum,
        "model": args.model,
        "train_size": n,
        "train_accuracy": train["accuracy"],
        "test_accuracy": test["accuracy"],
        "train_seconds": result.seconds,
        "samples_per_second": result.samples_per_second,
        "precision": result.precision,
        "config": cfg.model_dump(),
    }
    if args.out:
        meta = {"model": model.privquant_spec, "train": summary, "history": result.history,
                "privquant_version": privquant.__version__}  # fmt: skip
        save_checkpoint(args.out, model, meta)
        summary["checkpoint"] = str(Path(args.out).resolve())
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_attack(args: argparse.Namespace) -> int:
    from privquant.artifacts import atomic_write_json
    from privquant.attacks import Signals, format_table, run_attacks

    signals = Signals.load(args.signals)
    targets = [int(t) for t in args.target.split(",")]
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


def _cmd_signals(args: argparse.Namespace) -> int:
    from privquant.artifacts import ArtifactCache
    from privquant.data import load_dataset
    from privquant.membership import make_split
    from privquant.pipeline import collect_signals, query_views, train_population
    from privquant.training import TrainConfig

    ds = load_dataset(args.data)
    split = make_split(len(ds.y_train), len(ds.y_test), args.pool, args.models, seed=args.seed)
    cfg = TrainConfig(
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        augment=args.augment,
        seed=args.seed,
    )
    paths = train_population(ds, split, args.model, cfg, ArtifactCache(args.cache))
    signals = collect_signals(paths, ds.x_train[split.pool], ds.y_train[split.pool], split.keep,
                              query_views(ds.kind, args.queries))  # fmt: skip
    signals.save(args.out)
    split.save(Path(args.out).with_suffix(".split.npz"))
    print(
        f"wrote {args.out}: {signals.n_models} models x {signals.n_points} points x {signals.n_queries} queries"
    )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    # Until the audit pipeline lands, the demo trains the default model on the default data.
    start = time.perf_counter()
    ns = argparse.Namespace(data="fashion-mnist", model="small_cnn", epochs=5, lr=0.05, batch_size=256,
                            optimizer="sgd", augment="none", seed=0, label_smoothing=0.0,
                            train_size=20000, out=args.out)  # fmt: skip
    rc = _cmd_train(ns)
    print(f"demo finished in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return rc


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="privquant",
        description="Quantize neural networks to defend them against membership inference, "
        "and audit the result.",
    )
    p.add_argument("--version", action="version", version=f"privquant {privquant.__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="find, download and inspect datasets")
    dsub = data.add_subparsers(dest="data_command", required=True)
    f = dsub.add_parser("fetch", help="make a dataset available locally (download if needed)")
    f.add_argument("name")
    f.set_defaults(func=_cmd_data_fetch)
    i = dsub.add_parser("info", help="sizes, shapes, classes and source of a dataset")
    i.add_argument("name", help="built-in name, or npz:PATH, csv:PATH, folder:PATH")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.set_defaults(func=_cmd_data_info)

    t = sub.add_parser("train", help="train one model and print its accuracy")
    t.add_argument("--data", default="fashion-mnist")
    t.add_argument(
        "--model", default="small_cnn", choices=["mlp", "small_cnn", "resnet20", "resnet18"]
    )
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--lr", type=float, default=0.05)
    t.add_argument("--batch-size", type=int, default=256)
    t.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
    t.add_argument("--augment", default="none", choices=["none", "flip", "crop", "crop+flip"])
    t.add_argument("--label-smoothing", type=float, default=0.0)
    t.add_argument("--train-size", type=int, default=0, help="first N training rows (0: all)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", help="folder to write the checkpoint (safetensors + meta.json)")
    t.set_defaults(func=_cmd_train)

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

    s = sub.add_parser(
        "signals", help="train models on random halves of a pool and save their outputs"
    )
    s.add_argument("--data", default="fashion-mnist")
    s.add_argument(
        "--model", default="small_cnn", choices=["mlp", "small_cnn", "resnet20", "resnet18"]
    )
    s.add_argument("--models", type=int, default=8, help="number of models (target + shadows)")
    s.add_argument("--pool", type=int, default=10000, help="population pool size")
    s.add_argument("--epochs", type=int, default=10)
    s.add_argument("--lr", type=float, default=0.05)
    s.add_argument("--batch-size", type=int, default=256)
    s.add_argument("--augment", default="none", choices=["none", "flip", "crop", "crop+flip"])
    s.add_argument(
        "--queries", type=int, default=2, help="query views per point (original + augmentations)"
    )
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--cache", default="runs/cache", help="trained-model cache folder")
    s.add_argument("--out", required=True, help="signals .npz to write")
    s.set_defaults(func=_cmd_signals)

    d = sub.add_parser("demo", help="the newcomer's demo on Fashion-MNIST")
    d.add_argument("--out", default="runs/demo/model", help="checkpoint folder")
    d.set_defaults(func=_cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except PrivquantError as e:
        print(f"privquant: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
