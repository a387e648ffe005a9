"""``privquant train``: train one model and print its accuracy."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import privquant
from privquant.cli.common import _count, _from_field
from privquant.models.info import model_info
from privquant.population.owner import prepare_export_folder


def _cmd_train(args: argparse.Namespace) -> int:
    from privquant.artifacts import save_checkpoint
    from privquant.data import load_dataset, seeded_subset
    from privquant.training import TrainConfig, evaluate, train_new_model

    ds = load_dataset(args.data)
    n = min(args.train_size or len(ds.y_train), len(ds.y_train))
    rows = seeded_subset(len(ds.y_train), n, args.seed)
    cfg = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, optimizer=args.optimizer,
                      augment=args.augment, seed=args.seed, label_smoothing=args.label_smoothing)  # fmt: skip
    print(
        f"training {args.model} on {n} rows of {ds.name} for {cfg.epochs} epochs ...",
        file=sys.stderr,
    )
    model, result = train_new_model(
        args.model, ds.x_train[rows], ds.y_train[rows], ds.num_classes, cfg
    )
    test = evaluate(model, ds.x_test, ds.y_test)
    train = evaluate(model, ds.x_train[rows], ds.y_train[rows])
    summary = {
        "dataset": ds.name,
        "dataset_sha256": ds.checksum,
        "model": args.model,
        "train_size": n,
        "train_rows_seed": args.seed,
        "train_accuracy": train["accuracy"],
        "test_accuracy": test["accuracy"],
        "train_seconds": result.seconds,
        "samples_per_second": result.samples_per_second,
        "precision": result.precision,
        "config": cfg.model_dump(),
        "command": "privquant " + " ".join(sys.argv[1:]),
    }
    if args.out:
        meta = {"model": model_info(model).spec, "train": summary, "history": result.history,
                "privquant_version": privquant.__version__}  # fmt: skip
        save_checkpoint(prepare_export_folder(Path(args.out), Path(args.out) / "none"), model, meta)
        summary["checkpoint"] = str(Path(args.out).resolve())
    print(json.dumps(summary, indent=2))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    from privquant.models import model_names
    from privquant.training import TrainConfig

    t = sub.add_parser("train", help="train one model and print its accuracy")
    t.add_argument("--data", default="fashion-mnist")
    t.add_argument("--model", default="small_cnn", choices=model_names())
    for flag, name in (("--epochs", "epochs"), ("--lr", "lr"), ("--batch-size", "batch_size"),
                       ("--optimizer", "optimizer"), ("--augment", "augment"),
                       ("--label-smoothing", "label_smoothing")):  # fmt: skip
        _from_field(t, flag, TrainConfig, name)
    t.add_argument(
        "--train-size", type=_count, default=0, help="a seeded random N training rows (0: all)"
    )
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", help="folder to write the checkpoint (safetensors + meta.json)")
    t.set_defaults(func=_cmd_train)
