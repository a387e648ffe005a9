"""The ``privquant`` command."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import ValidationError

import privquant
from privquant.errors import ConfigError, PrivquantError

if TYPE_CHECKING:
    from privquant.data import Dataset
    from privquant.defenses import DefenseContext, VariantConfig
    from privquant.results import AuditResults


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


def _from_field(
    parser: argparse.ArgumentParser, flag: str, model: type, name: str, **kw: Any
) -> None:
    """A flag whose default, choices and help come from a config field, so they never drift."""
    import typing

    info = model.model_fields[name]
    options: dict[str, Any] = {"default": info.default, "help": info.description}
    args = typing.get_args(info.annotation)
    if typing.get_origin(info.annotation) is typing.Literal:
        options["choices"] = list(args)
    elif info.annotation in (int, float, str):
        options["type"] = info.annotation
    options.update(kw)
    parser.add_argument(flag, **options)
    CONFIG_FLAGS.append((parser.prog, flag, model, name))


CONFIG_FLAGS: list[
    tuple[str, str, type, str]
] = []  # (command, flag, config model, field): tests read it


def _at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


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
        meta = {"model": model.privquant_spec, "train": summary, "history": result.history,
                "privquant_version": privquant.__version__}  # fmt: skip
        save_checkpoint(_export_folder(Path(args.out), Path(args.out) / "none"), model, meta)
        summary["checkpoint"] = str(Path(args.out).resolve())
    print(json.dumps(summary, indent=2))
    return 0


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


def _checkpoint_dataset(meta: dict, override: str | None) -> str:
    name = override or meta.get("dataset") or meta.get("train", {}).get("dataset")
    if not name:
        raise PrivquantError("the checkpoint does not record its dataset; pass --data NAME")
    return name


def _owner_rows(args: argparse.Namespace, ds: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training rows (the seeded subset `privquant train` used), reference rows, and the rest."""
    n = min(args.train_size or len(ds.y_train), len(ds.y_train))
    perm = np.random.default_rng(getattr(args, "rows_seed", args.seed)).permutation(len(ds.y_train))
    rows = np.sort(perm[:n])
    ref = np.sort(perm[n : n + args.reference_size])
    if args.reference_size and len(ref) < args.reference_size:
        raise PrivquantError(
            f"--reference-size: only {len(ref)} rows of {ds.name} are left after {n} training rows"
        )
    return rows, ref, perm[n + len(ref) :]


def _rows_from_record(args: argparse.Namespace, meta: dict) -> None:
    """The training rows a checkpoint records (train_size, the rows' seed) unless the flags say
    otherwise; a --train-size that contradicts the record is refused (it would audit and
    fine-tune on rows the model never trained on)."""
    recorded = meta.get("train") if isinstance(meta.get("train"), dict) else {}
    rec_n, rec_seed = recorded.get("train_size"), recorded.get("train_rows_seed")
    if args.train_size is None:
        args.train_size = int(rec_n) if isinstance(rec_n, int) else 0
    elif isinstance(rec_n, int) and args.train_size not in (0, rec_n):
        raise ConfigError(f"--train-size {args.train_size}: {args.checkpoint} was trained on {rec_n} rows "
                          "(its meta.json); omit the flag to use them")  # fmt: skip
    elif args.train_size == 0 and isinstance(rec_n, int):
        args.train_size = rec_n
    # The rows are the ones training drew; --seed then seeds only what the defense draws.
    args.rows_seed = int(rec_seed) if isinstance(rec_seed, int) else (args.seed or 0)
    if args.seed is None:
        args.seed = args.rows_seed


def _owner_context(args: argparse.Namespace, meta: dict, ds: Dataset) -> DefenseContext:
    """The defense context of a model's owner: its training rows and disjoint reference rows.

    Training rows are the seeded subset ``privquant train`` used (same --train-size and --seed);
    reference rows are drawn from the remaining rows. The recipe is the checkpoint's own.
    """
    from privquant.defenses import DefenseContext
    from privquant.population import model_factory
    from privquant.training import TrainConfig

    rows, ref, _ = _owner_rows(args, ds)
    spec = meta.get("model") or {}
    options = {k: v for k, v in spec.get("kwargs", {}).items()
               if k not in ("input_shape", "num_classes", "mean", "std")}  # fmt: skip
    # Train-stage defenses retrain with the recipe the checkpoint was trained with (recorded by
    # `privquant train` and by populations); --epochs/--lr are the fine-tuning knobs of transforms.
    recorded = meta.get("train") or {}
    recipe = recorded.get("config") if isinstance(recorded.get("config"), dict) else recorded
    if isinstance(recipe, dict) and "epochs" in recipe:
        train = TrainConfig.model_validate(recipe).model_copy(update={"seed": args.seed})
    else:
        print("privquant: the checkpoint records no training recipe; train-stage defenses use "
              f"--epochs {args.epochs} --lr {args.lr}", file=sys.stderr)  # fmt: skip
        train = TrainConfig(
            epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed
        )
    return DefenseContext(x=ds.x_train[rows], y=ds.y_train[rows],
                          x_reference=ds.x_train[ref] if len(ref) else None,
                          y_reference=ds.y_train[ref] if len(ref) else None, num_classes=ds.num_classes,
                          train=train, seed=args.seed,
                          model_fn=model_factory(spec.get("name", "small_cnn"), ds.num_classes, options))  # fmt: skip


# Every file a privquant export or checkpoint folder may hold; a new export into a folder
# removes them first, so a stale graph or weights of another kind never sit beside new ones.
EXPORT_FILES = ("manifest.json", "quantized.safetensors", "model.safetensors", "meta.json",
                "defense.json", "outputs.json", "outputs.safetensors", "model.onnx", "model.int8.onnx")  # fmt: skip


def _export_folder(out: Path, source: Path) -> Path:
    """``out`` ready for a new export: never the input checkpoint, no stale artifacts."""
    if out.exists() and source.exists() and out.resolve() == source.resolve():
        raise ConfigError(
            f"--out {out}: is the input checkpoint; writing there would overwrite the model it was "
            "made from. Choose another folder"
        )
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder")
    for name in EXPORT_FILES:
        (out / name).unlink(missing_ok=True)
    return out


def _deploy_checkpoint(args: argparse.Namespace, variant: VariantConfig) -> int:
    """Apply ``variant`` to a checkpoint through the one defense path, export it, report it."""
    from privquant.artifacts import atomic_write_json, load_checkpoint, save_checkpoint
    from privquant.data import load_dataset
    from privquant.defenses import apply_outputs, apply_transforms, train_model
    from privquant.defenses.serving import save_output_stage
    from privquant.quant import export_quantized, quant_layers
    from privquant.quant.export import model_size
    from privquant.training import evaluate

    if getattr(args, "onnx_int8", False) and variant.output_steps:
        raise ConfigError(
            f"--onnx-int8: the int8 graph cannot carry the output steps "
            f"{[s.method for s in variant.output_steps]}, so it would release raw posteriors the "
            "audit never saw; drop --onnx-int8 (use --onnx) or the output steps"
        )
    out = _export_folder(Path(args.out), Path(args.checkpoint))
    model, meta = load_checkpoint(args.checkpoint)
    _rows_from_record(args, meta)
    ds = load_dataset(_checkpoint_dataset(meta, args.data))
    ctx = _owner_context(args, meta, ds)
    start = time.perf_counter()
    if variant.train_step is not None:
        model = train_model(variant.train_step, ctx)
    deployed = apply_transforms(variant.transform_steps, model, ctx)
    seconds = time.perf_counter() - start
    # A train-stage defense built a new model (its normalization fitted on its own data).
    deployed.privquant_spec = getattr(model, "privquant_spec", None) or meta["model"]
    if quant_layers(deployed):
        size = export_quantized(deployed, out)["size"]
    else:
        save_checkpoint(out, deployed, {"model": deployed.privquant_spec, "dataset": ds.name})
        size = model_size(deployed)
    atomic_write_json(out / "defense.json", variant.model_dump(mode="json"))
    served = apply_outputs(variant.output_steps, deployed, ctx)
    # The output steps are part of the artifact: every loader (and the ONNX graph) applies them.
    save_output_stage(served, variant.output_steps, out)
    test = evaluate(served, ds.x_test, ds.y_test)
    summary = {"steps": [s.model_dump(mode="json") for s in variant.steps], "dataset": ds.name,
               "test_accuracy": test["accuracy"], "seconds": seconds, "size": size,
               "train_rows": int(len(ctx.x)), "train_rows_seed": args.rows_seed,
               "out": str(out.resolve())}  # fmt: skip
    if args.onnx:
        from privquant.quant.onnx_export import export_onnx

        export_onnx(served, out / "model.onnx", ds.input_shape)
        summary["onnx"] = str((out / "model.onnx").resolve())
    if getattr(args, "onnx_int8", False):
        from privquant.data import seeded_subset
        from privquant.quant.onnx_export import onnx_logits, onnx_session
        from privquant.quant.onnx_int8 import export_onnx_int8

        # Activation ranges from a sample of the owner's own training rows (what the owner has).
        calib = seeded_subset(len(ctx.x), 512, args.seed)
        path = export_onnx_int8(deployed, out / "model.int8.onnx", ds.input_shape, ctx.x[calib])
        logits = onnx_logits(onnx_session(path), ds.x_test)
        summary["onnx_int8"] = {
            "path": str(path.resolve()),
            "test_accuracy": float((logits.argmax(1) == ds.y_test).mean()),
        }
    if getattr(args, "audit", False):
        summary["audit"] = _audit_defense(args, meta, ds, ctx, variant, out / "audit")
    print(json.dumps(summary, indent=2))
    return 0


def _audit_defense(
    args: argparse.Namespace,
    meta: dict,
    ds: Dataset,
    ctx: DefenseContext,
    variant: VariantConfig,
    out: Path,
) -> dict:
    """Audit FP32 vs standard QAT vs the defense, target = the checkpoint, with fresh shadows.

    Members are the checkpoint's training rows, non-members as many rows it never saw (neither
    trained on nor reference); with fewer such rows, a seeded subset of members is used.
    """
    from privquant.artifacts import load_checkpoint
    from privquant.defenses import VariantConfig
    from privquant.pipeline import audit_model
    from privquant.report import render_report

    model, _ = load_checkpoint(args.checkpoint)
    rows, _, rest = _owner_rows(args, ds)
    k = min(len(rows), len(rest))
    if k < 50:
        raise PrivquantError(f"--audit: only {len(rest)} rows of {ds.name} are outside the training and "
                             "reference rows; an audit needs at least 50 non-members")  # fmt: skip
    if k < len(rows):
        print(
            f"privquant: auditing {k} of the {len(rows)} training rows (only {k} unseen rows)",
            file=sys.stderr,
        )
    members = np.sort(np.random.default_rng(args.seed).permutation(rows)[:k])
    nonmembers = np.sort(rest[:k])
    quant = next((s.quant for s in variant.steps if hasattr(s, "quant")), None)
    bits = quant.weight_bits if quant is not None else 4
    variants = [VariantConfig(name="fp32"),
                VariantConfig(name=f"qat{bits:g}", method="qat", quant={"weight_bits": bits}),
                VariantConfig(name="defended", steps=variant.steps)]  # fmt: skip
    x_fit = ctx.x
    results = audit_model(model, (ds.x_train[members], ds.y_train[members]),
                          (ds.x_train[nonmembers], ds.y_train[nonmembers]), lambda: ctx.model_fn(x_fit), ctx.train,
                          n_shadows=args.audit_shadows, variants=variants, test=(ds.x_test, ds.y_test),
                          reference=None if ctx.x_reference is None else (ctx.x_reference, ctx.y_reference),
                          n_bootstrap=100, seed=args.seed, progress=True)  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    results.save(out / "results.json")
    report = render_report(results, out)
    attack = results.headline_attack()
    return {"report": str(report.resolve()), "attack": attack,
            "variants": {n: {"test_accuracy": v.test_accuracy, "auc": v.attacks[attack].mean["auc"],
                             "tpr@1%fpr": v.attacks[attack].mean["tpr@1%fpr"]} for n, v in results.variants.items()}}  # fmt: skip


def _cmd_quantize(args: argparse.Namespace) -> int:
    from privquant.defenses import get_defense
    from privquant.quant import QuantConfig

    quant = QuantConfig(weight_bits=args.bits, act_bits=args.act_bits, granularity=args.granularity,
                        symmetric=not args.asymmetric, calibration=args.calibration,
                        learn_scale=args.lsq, first_last_bits=None if args.all_layers else 8)  # fmt: skip
    fields = get_defense(args.method).config.model_fields
    offered = {"quant": quant, "epochs": args.epochs, "lr": args.lr}
    step = {"method": args.method, **{k: v for k, v in offered.items() if k in fields}}
    return _deploy_checkpoint(args, _variant(f"{args.method}{args.bits}", [step]))


def _cmd_defend(args: argparse.Namespace) -> int:
    import yaml

    from privquant.defenses.recipes import default_recipe

    steps: object = default_recipe(args.bits)
    if args.steps is not None:
        text = Path(args.steps).read_text() if Path(args.steps).is_file() else args.steps
        try:
            steps = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise PrivquantError(f"--steps: not valid YAML ({e})") from e
        steps = [steps] if isinstance(steps, dict) else steps
    if args.checkpoint is None:
        return _defend_from_data(args, _variant("defended", steps))
    return _deploy_checkpoint(args, _variant("defended", steps))


def _defend_from_data(args: argparse.Namespace, variant: VariantConfig) -> int:
    """``privquant defend --data ... --model ...``: a user's own model and data, one call."""
    import yaml
    from pydantic import ValidationError

    import privquant
    from privquant.data import load_dataset
    from privquant.pipeline.config import format_errors, load_plugins
    from privquant.population import model_factory
    from privquant.training import TrainConfig

    if not args.data or not args.model:
        raise ConfigError("defend without a checkpoint: give --data (your rows) and --model (registered, "
                          "e.g. from --plugin)")  # fmt: skip
    load_plugins(args.plugin, Path.cwd(), "--plugin")
    raw = args.train_config
    recipe = {}
    if raw:
        recipe = yaml.safe_load(Path(raw).read_text() if Path(raw).is_file() else raw) or {}
        if not isinstance(recipe, dict):
            raise ConfigError(
                f"--train-config: expected a mapping of TrainConfig fields, got {recipe!r}"
            )
    try:
        train = TrainConfig.model_validate(recipe)
    except ValidationError as e:
        raise ConfigError(format_errors(e, "--train-config")) from None
    out = _export_folder(Path(args.out), Path(args.out) / "none")
    ds = load_dataset(args.data)
    seed = args.rows_seed = 0 if args.seed is None else args.seed
    rows, ref, _ = _owner_rows(args, ds)
    n = len(rows)
    factory = model_factory(args.model, ds.num_classes, {})
    sample = ds.x_train[rows]
    start = time.perf_counter()
    deployed = privquant.defend(lambda: factory(sample), train=(ds.x_train[rows], ds.y_train[rows]),
                                reference=(ds.x_train[ref], ds.y_train[ref]) if len(ref) else None,
                                recipe=[s.model_dump(mode="json") for s in variant.steps], train_config=train,
                                num_classes=ds.num_classes, seed=seed)  # fmt: skip
    deployed.save(out, onnx=args.onnx, int8=args.onnx_int8)
    test = deployed.evaluate(ds.x_test, ds.y_test)
    print(json.dumps({"dataset": ds.name, "model": args.model, "steps": [s.model_dump(mode="json") for s in variant.steps],
                      "train_rows": int(n), "test_accuracy": test["accuracy"],
                      "seconds": time.perf_counter() - start, "out": str(out.resolve())}, indent=2))  # fmt: skip
    return 0


def _variant(name: str, steps: object) -> VariantConfig:
    from pydantic import ValidationError

    from privquant.defenses import VariantConfig
    from privquant.errors import ConfigError
    from privquant.pipeline.config import format_errors

    try:
        return VariantConfig(name=name, steps=steps)
    except ValidationError as e:
        raise ConfigError(format_errors(e, "defense steps")) from None


def _cmd_eval(args: argparse.Namespace) -> int:
    from privquant.artifacts import load_checkpoint
    from privquant.data import load_dataset
    from privquant.quant import load_quantized
    from privquant.quant.export import fp32_size
    from privquant.training import evaluate

    folder = Path(args.folder)
    if (folder / "manifest.json").is_file():
        model, manifest = load_quantized(folder)
        size = manifest["size"]
        dataset = args.data
    else:
        from privquant.defenses.serving import apply_saved_outputs

        model, meta = load_checkpoint(folder)
        size = fp32_size(model)
        model = apply_saved_outputs(model, folder)
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


def _cmd_compare(args: argparse.Namespace) -> int:
    from privquant.results import AuditResults, compare_results

    diff = compare_results(AuditResults.load(args.run_a), AuditResults.load(args.run_b))
    if args.json:
        print(json.dumps(diff, indent=2))
        return 0
    attack = diff["headline_attack"]
    print(f"{'variant':<12} {'test acc (A -> B)':>20}  {attack}: AUC (A -> B)   TPR@1%FPR (A -> B)")
    for r in diff["summary"]:
        acc = " -> ".join("–" if x is None else f"{x:.4f}" for x in r["test_accuracy"])
        auc = " -> ".join(f"{x:.3f}" for x in r.get("auc", []))
        tpr = " -> ".join(f"{x:.4f}" for x in r.get("tpr@1%fpr", []))
        print(f"{r['variant']:<12} {acc:>20}  {auc:>{len(attack) + 16}} {tpr:>20}")
    for side in ("only_in_a", "only_in_b"):
        if diff[side]:
            print(f"variants {side.replace('_', ' ')}: {', '.join(diff[side])}")
    changed = diff["changed"]
    print(f"{len(changed)} of {diff['compared']} values differ (timings and machine aside)")
    for c in changed[: args.show]:
        print(f"  {c['path']}: {c['a']!r} -> {c['b']!r}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from importlib.resources import files

    ns = argparse.Namespace(config=str(files("privquant.pipeline") / "demo.yaml"), out=args.out)
    return _cmd_run(ns)


def _count(text: str) -> int:
    """argparse type: a non-negative integer (a negative row count would silently mean N - k)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a count >= 0, got {value}")
    return value


def _bits(text: str) -> float:
    """argparse type: '1.58' (ternary) or a whole number of bits."""
    try:
        return float(text) if text == "1.58" else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 1.58 or 2..8, got {text!r}") from None


def _bits_argument(q: argparse.ArgumentParser, help_text: str) -> None:
    from privquant.quant import ALLOWED_BITS

    q.add_argument(
        "--bits", type=_bits, default=4, choices=ALLOWED_BITS, metavar="{1.58,2..8}", help=help_text
    )


def _owner_arguments(p: argparse.ArgumentParser) -> None:
    """What the model's owner has: its training rows, reference rows, and a fine-tuning recipe."""
    p.add_argument("--data", help="dataset (default: the one recorded in the checkpoint)")
    p.add_argument(
        "--train-size",
        type=_count,
        default=None,
        help="the seeded N training rows (default: what the checkpoint records; 0: all)",
    )
    p.add_argument("--reference-size", type=_count, default=0,
                   help="defender reference rows, drawn from the rows not trained on")  # fmt: skip
    p.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs (e.g. QAT)")
    p.add_argument("--lr", type=float, default=0.001,
                   help="fine-tuning learning rate (peak of the one-cycle schedule)")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the defense's own draws (default: the checkpoint's row seed)")  # fmt: skip
    p.add_argument("--onnx", action="store_true", help="also write model.onnx (QDQ)")
    p.add_argument(
        "--onnx-int8", action="store_true",
        help="also write model.int8.onnx: integer kernels in ONNX Runtime (8-bit activations)",
    )  # fmt: skip
    p.add_argument("--out", required=True, help="export folder")


def build_parser() -> argparse.ArgumentParser:
    from privquant.defenses import defense_names, get_defense
    from privquant.models import model_names
    from privquant.pipeline.config import DataConfig, PopulationConfig
    from privquant.training import TrainConfig

    CONFIG_FLAGS.clear()

    p = argparse.ArgumentParser(
        prog="privquant",
        description="Quantize neural networks to defend them against membership inference, "
        "and audit the result.",
    )
    p.add_argument("--version", action="version", version=f"privquant {privquant.__version__}")
    p.add_argument(
        "--debug",
        action="store_true",
        help="show the Python traceback of an error (for bug reports)",
    )
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

    q = sub.add_parser(
        "quantize", help="quantize a checkpoint (PTQ, AdaRound, QAT, ...) and export integers"
    )
    q.add_argument(
        "checkpoint", help="folder with model.safetensors + meta.json (from `privquant train`)"
    )
    # Only the methods these flags configure fully (calibrate needs candidate chains: use defend --steps).
    quantizers = [m for m in defense_names("transform")
                  if not {f for f, i in get_defense(m).config.model_fields.items() if i.is_required()} - {"quant"}]  # fmt: skip
    q.add_argument("--method", default="ptq", choices=quantizers)
    _bits_argument(q, "weight bits")
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
    _owner_arguments(q)
    q.set_defaults(func=_cmd_quantize)

    df = sub.add_parser(
        "defend", help="apply defense steps (any registered methods) to a checkpoint and export it"
    )
    df.add_argument("checkpoint", nargs="?", default=None,
                    help="folder with model.safetensors + meta.json; omit it to train your own model on --data "
                    "(npz:PATH, csv:PATH, folder:PATH or a built-in name) with --model from --plugin")  # fmt: skip
    df.add_argument("--plugin", action="append", default=[],
                    help="Python file that registers --model (@register_model), imported first; repeatable")  # fmt: skip
    df.add_argument(
        "--model", help="without a checkpoint: the registered model to train and defend"
    )
    df.add_argument("--train-config", default=None,
                    help="without a checkpoint: the training recipe as YAML (a TrainConfig mapping, or a file "
                    "holding one), e.g. '{epochs: 20, lr: 0.05}'; default: TrainConfig's defaults")  # fmt: skip
    _bits_argument(
        q=df,
        help_text="weight bits of the default recipe (split distillation + QAT on the student's outputs)",
    )
    df.add_argument(
        "--steps",
        default=None,
        help="instead of the default recipe: a YAML list of steps, or a file holding one, e.g. "
        "'[{method: qat, quant: {weight_bits: 4}}, {method: output_coarsening, levels: 10}]'; "
        f"methods: {', '.join(defense_names())}",
    )
    df.add_argument("--audit", action="store_true",
                    help="also audit FP32 vs standard QAT vs the defense (fresh shadows) into OUT/audit/")  # fmt: skip
    df.add_argument("--audit-shadows", type=_at_least(2), default=4,
                    help="shadow models of the --audit (at least 2: thresholds are calibrated on them)")  # fmt: skip
    _owner_arguments(df)
    df.set_defaults(func=_cmd_defend)

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

    c = sub.add_parser("compare", help="what changed between two audits (RUN_A -> RUN_B)")
    c.add_argument("run_a", help="run folder or results.json")
    c.add_argument("run_b", help="run folder or results.json")
    c.add_argument("--show", type=int, default=20, help="list at most this many changed values")
    c.add_argument("--json", action="store_true", help="print every difference as JSON")
    c.set_defaults(func=_cmd_compare)

    d = sub.add_parser(
        "demo", help="the newcomer's demo: audit FP32 vs quantized models on Fashion-MNIST"
    )
    d.add_argument("--out", default="runs/demo", help="run folder")
    d.set_defaults(func=_cmd_demo)
    return p


FILE_OUTPUTS = ("signals",)  # commands whose --out is a file; every other --out is a folder


def check_out(command: str, out: str | None) -> None:
    """Refuse an unusable --out before any work (a trained model must never be lost at the end)."""
    if not out:
        return
    path = Path(out)
    want_file = command in FILE_OUTPUTS
    if path.exists() and path.is_dir() == want_file:
        kind = "a folder" if path.is_dir() else "a file"
        raise PrivquantError(
            f"--out {out}: is {kind}; expected {'a file path' if want_file else 'a folder'}"
        )
    parent = path.parent if want_file or not path.exists() else path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise PrivquantError(f"--out {out}: cannot write under {parent} (not a writable folder)")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_out(args.command, getattr(args, "out", None))
        return int(args.func(args))
    except KeyboardInterrupt:
        print(
            "privquant: interrupted; rerun the same command to resume from the cache",
            file=sys.stderr,
        )
        return 130
    except BrokenPipeError:  # `privquant compare ... | head -1`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except ValidationError as e:  # a flag's value failed a config model's rule: name the flag
        if args.debug:
            raise
        for err in e.errors():
            flag = "--" + str(err["loc"][-1]).replace("_", "-") if err["loc"] else "input"
            print(
                f"privquant: error: {flag}: {err['msg']} (got {err.get('input')!r})",
                file=sys.stderr,
            )
        return 2
    except PrivquantError as e:
        if args.debug:
            raise
        print(f"privquant: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        # Anything else the inputs can provoke (a bad file, a full disk, a wrong shape) or a
        # bug: one line naming what went wrong; the traceback is for --debug.
        if args.debug:
            raise
        where = f" ({e.filename})" if isinstance(e, OSError) and e.filename else ""
        print(f"privquant: error: {type(e).__name__}{where}: {e}  [--debug shows the traceback]",
              file=sys.stderr)  # fmt: skip
        return 2


if __name__ == "__main__":
    sys.exit(main())
