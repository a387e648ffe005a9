"""``privquant signals``: train models on random halves of a pool and save their outputs."""

from __future__ import annotations

import argparse
from pathlib import Path

from privquant.cli.common import _from_field


def _cmd_signals(args: argparse.Namespace) -> int:
    from privquant.artifacts import ArtifactCache
    from privquant.data import load_dataset
    from privquant.membership import make_split
    from privquant.population import train_population
    from privquant.signals import collect_signals, query_views
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
                              query_views(ds.kind, args.queries, args.query_shift))  # fmt: skip
    signals.save(args.out)
    split.save(Path(args.out).with_suffix(".split.npz"))
    print(
        f"wrote {args.out}: {signals.n_models} models x {signals.n_points} points x {signals.n_queries} queries"
    )
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    from privquant.models import model_names
    from privquant.pipeline.config import DataConfig, PopulationConfig
    from privquant.training import TrainConfig

    s = sub.add_parser(
        "signals", help="train models on random halves of a pool and save their outputs"
    )
    s.add_argument("--data", default="fashion-mnist")
    s.add_argument("--model", default="small_cnn", choices=model_names())
    _from_field(s, "--models", PopulationConfig, "n_models")
    _from_field(s, "--pool", DataConfig, "pool_size")
    for flag, name in (("--epochs", "epochs"), ("--lr", "lr"), ("--batch-size", "batch_size"),
                       ("--augment", "augment")):  # fmt: skip
        _from_field(s, flag, TrainConfig, name)
    _from_field(s, "--queries", PopulationConfig, "queries", choices=range(1, 19), metavar="1..18")
    _from_field(s, "--query-shift", PopulationConfig, "query_shift")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--cache", default="runs/cache", help="trained-model cache folder")
    s.add_argument("--out", required=True, help="signals .npz to write")
    s.set_defaults(func=_cmd_signals)
