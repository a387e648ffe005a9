"""The ``privquant`` command."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

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
    # A seeded random subset: image folders list their files class by class.
    rows = np.sort(np.random.default_rng(args.seed).permutation(len(ds.y_train))[:n])
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


def _checkpoint_dataset(meta: dict, override: str | None) -> str:
    name = override or meta.get("dataset") or meta.get("train", {}).get("dataset")
    if not name:
        raise PrivquantError("the checkpoint does not record its dataset; pass --data NAME")
    return name


def _cmd_quantize(args: argparse.Namespace) -> int:
    from privquant.artifacts import load_checkpoint
    from privquant.data import load_dataset
    from privquant.quant import (
        QuantConfig,
        calibration_batches,
        export_quantized,
        quantization_aware_training,
        quantize,
    )
    from privquant.training import TrainConfig, evaluate

    model, meta = load_checkpoint(args.checkpoint)
    ds = load_dataset(_checkpoint_dataset(meta, args.data))
    n = min(args.train_size or len(ds.y_train), len(ds.y_train))
    rows = np.sort(np.random.default_rng(args.seed).permutation(len(ds.y_train))[:n])
    x, y = ds.x_train[rows], ds.y_train[rows]
    bits = float(args.bits) if args.bits == "1.58" else int(args.bits)
    cfg = QuantConfig(weight_bits=bits, act_bits=args.act_bits, granularity=args.granularity,
                      symmetric=not args.asymmetric, calibration=args.calibration,
                      rounding="adaround" if args.method == "adaround" else "nearest",
                      learn_scale=args.lsq, first_last_bits=None if args.all_layers else 8)  # fmt: skip
    calib = calibration_batches(x, cfg.calibration_batches, seed=args.seed)
    start = time.perf_counter()
    if args.method == "qat":
        tcfg = TrainConfig(
            epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed
        )
        qmodel, _ = quantization_aware_training(model, cfg, x, y, tcfg, calib)
    else:
        qmodel = quantize(model, cfg, calib)
    seconds = time.perf_counter() - start
    qmodel.privquant_spec = meta["model"]
    manifest = export_quantized(qmodel, args.out)
    test = evaluate(qmodel, ds.x_test, ds.y_test)
    summary = {"method": args.method, "bits": bits, "act_bits": args.act_bits, "dataset": ds.name,
               "test_accuracy": test["accuracy"], "seconds": seconds, "size": manifest["size"],
               "out": str(Path(args.out).resolve())}  # fmt: skip
    if args.onnx:
        from privquant.quant.onnx_export import export_onnx

        export_onnx(qmodel, Path(args.out) / "model.onnx", ds.input_shape)
        summary["onnx"] = str((Path(args.out) / "model.onnx").resolve())
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from privquant.artifacts import load_checkpoint
    from privquant.data import load_dataset
    from privquant.quant import load_quantized
    from privquant.training import evaluate

    folder = Path(args.folder)
    if (folder / "manifest.json").is_file():
        model, manifest = load_quantized(folder)
        size = manifest["size"]
        dataset = args.data
    else:
        model, meta = load_checkpoint(folder)
        n_params = sum(p.numel() for p in model.parameters()) + sum(
            b.numel() for b in model.buffers()
        )
        size = {
            "total_bytes": 4 * n_params,
            "avg_bits_per_parameter": 32.0,
            "fp32_bytes": 4 * n_params,
        }
        dataset = _checkpoint_dataset(meta, args.data)
    if not dataset:
        raise PrivquantError(f"{folder}: pass --data NAME to say which dataset to evaluate on")
    ds = load_dataset(dataset)
    test = evaluate(model, ds.x_test, ds.y_test)
    result = {"folder": str(folder.resolve()), "dataset": ds.name, "test_accuracy": test["accuracy"],
              "test_loss": test["loss"], "size_bytes": size["total_bytes"], "size": size}  # fmt: skip
    if args.onnx:
        from privquant.quant.onnx_export import onnx_logits, onnx_session
        from privquant.training import predict_logits

        onnx_path = folder / "model.onnx"
        ort = onnx_logits(onnx_session(onnx_path), ds.x_test)
        ours = predict_logits(model, ds.x_test)
        result["onnx"] = {"max_abs_diff": float(abs(ort - ours).max()),
                          "argmax_agreement": float((ort.argmax(1) == ours.argmax(1)).mean()),
                          "accuracy": float((ort.argmax(1) == ds.y_test).mean())}  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{ds.name}: test accuracy {result['test_accuracy']:.4f}, {result['size_bytes']} bytes"
        )
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from privquant.pipeline.config import load_config
    from privquant.pipeline.run import run_audit

    config = load_config(args.config)
    start = time.perf_counter()
    results = run_audit(config, args.out)
    _print_summary(results)
    print(f"\nreport: {Path(args.out).resolve() / 'report.html'} (and report.md); "
          f"finished in {time.perf_counter() - start:.0f} s")  # fmt: skip
    return 0


def _print_summary(results: dict) -> None:
    from privquant.report.render import _headline_attack

    attack = _headline_attack(results)
    print(
        f"{'variant':<10} {'bits':>5} {'KiB':>8} {'test acc':>9}  {attack}: AUC   TPR@1%FPR  TPR@0.1%FPR"
    )
    for name, v in results["variants"].items():
        m = v["attacks"][attack]["mean"]
        print(f"{name:<10} {v['bits']:>5.2f} {v['size_bytes'] / 1024:>8.1f} {v['test_accuracy']:>9.4f}  "
              f"{m['auc']:>{len(attack) + 6}.3f} {m['tpr@1%fpr']:>10.4f} {m['tpr@0.1%fpr']:>12.4f}")  # fmt: skip


def _cmd_report(args: argparse.Namespace) -> int:
    from privquant.report import render_report

    path = render_report(Path(args.run_dir) / "results.json", args.run_dir)
    print(f"report: {path.resolve()}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from importlib.resources import files

    ns = argparse.Namespace(config=str(files("privquant.pipeline") / "demo.yaml"), out=args.out)
    return _cmd_run(ns)


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
    t.add_argument(
        "--train-size", type=int, default=0, help="a seeded random N training rows (0: all)"
    )
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

    q = sub.add_parser(
        "quantize", help="quantize a checkpoint (PTQ, AdaRound or QAT) and export integers"
    )
    q.add_argument(
        "checkpoint", help="folder with model.safetensors + meta.json (from `privquant train`)"
    )
    q.add_argument("--method", default="ptq", choices=["ptq", "adaround", "qat"])
    q.add_argument(
        "--bits",
        default="4",
        choices=["1.58", "2", "3", "4", "5", "6", "7", "8"],
        help="weight bits",
    )
    q.add_argument(
        "--act-bits", type=int, default=None, help="activation bits (default: weights only)"
    )
    q.add_argument("--granularity", default="per_channel", choices=["per_channel", "per_tensor"])
    q.add_argument("--asymmetric", action="store_true", help="asymmetric weight grid")
    q.add_argument("--calibration", default="mse", choices=["minmax", "percentile", "mse"])
    q.add_argument("--lsq", action="store_true", help="QAT: learn step sizes (LSQ)")
    q.add_argument(
        "--all-layers",
        action="store_true",
        help="also quantize first/last layer to --bits (default 8)",
    )
    q.add_argument("--data", help="dataset (default: the one recorded in the checkpoint)")
    q.add_argument(
        "--train-size", type=int, default=0, help="first N training rows for calibration/QAT"
    )
    q.add_argument("--epochs", type=int, default=2, help="QAT epochs")
    q.add_argument("--lr", type=float, default=0.001,
                   help="QAT learning rate (BatchNorm-folded networks diverge at 0.01)")  # fmt: skip
    q.add_argument("--batch-size", type=int, default=256)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--onnx", action="store_true", help="also write model.onnx (QDQ)")
    q.add_argument("--out", required=True, help="export folder")
    q.set_defaults(func=_cmd_quantize)

    e = sub.add_parser("eval", help="accuracy and size of a checkpoint or quantized export")
    e.add_argument("folder")
    e.add_argument("--data", help="dataset (default: the one recorded in a checkpoint)")
    e.add_argument(
        "--onnx", action="store_true", help="also run FOLDER/model.onnx in ONNX Runtime and compare"
    )
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=_cmd_eval)

    r = sub.add_parser("run", help="run a whole audit from a YAML config and write the report")
    r.add_argument("config", help="YAML config (see src/privquant/pipeline/demo.yaml)")
    r.add_argument("--out", required=True, help="run folder (reused to resume an interrupted run)")
    r.set_defaults(func=_cmd_run)

    rep = sub.add_parser(
        "report", help="re-render RUN_DIR/report.{md,html} from RUN_DIR/results.json"
    )
    rep.add_argument("run_dir")
    rep.set_defaults(func=_cmd_report)

    d = sub.add_parser(
        "demo", help="the newcomer's demo: audit FP32 vs quantized models on Fashion-MNIST"
    )
    d.add_argument("--out", default="runs/demo", help="run folder")
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
