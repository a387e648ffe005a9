"""Quantize and defend: a checkpoint (or the user's own data and model) to an export."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

import privquant
from privquant.cli.common import _at_least, _bits_argument, _count
from privquant.errors import ConfigError, PrivquantError
from privquant.metrics import AUC, TPR_1
from privquant.models.info import model_info
from privquant.population.owner import checkpoint_dataset, prepare_export_folder

if TYPE_CHECKING:
    from privquant.data import Dataset
    from privquant.defenses import DefenseContext, VariantConfig


def _owner_rows(args: argparse.Namespace, ds: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training rows (the seeded subset `privquant train` used), reference rows, and the rest."""
    from privquant.population.owner import owner_rows

    seed = getattr(args, "rows_seed", args.seed)
    return owner_rows(ds, args.train_size, 0 if seed is None else seed, args.reference_size)


def _rows_from_record(args: argparse.Namespace, meta: dict) -> None:
    """--train-size and --seed completed from what the checkpoint records (see rows_from_record)."""
    from privquant.population.owner import rows_from_record

    rows = rows_from_record(meta, args.train_size, args.seed, str(args.checkpoint))
    args.train_size, args.rows_seed, args.seed = rows.train_size, rows.rows_seed, rows.seed


def _owner_context(args: argparse.Namespace, meta: dict, ds: Dataset) -> DefenseContext:
    """The defense context of the checkpoint's owner; --epochs/--lr/--batch-size are the recipe
    only when the checkpoint records none."""
    from privquant.population.owner import owner_context
    from privquant.training import TrainConfig

    rows, ref, _ = _owner_rows(args, ds)
    fallback = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size)
    return owner_context(meta, ds, rows, ref, args.seed, fallback)


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
    out = prepare_export_folder(Path(args.out), Path(args.checkpoint))
    model, meta = load_checkpoint(args.checkpoint)
    _rows_from_record(args, meta)
    ds = load_dataset(checkpoint_dataset(meta, args.data))
    ctx = _owner_context(args, meta, ds)
    start = time.perf_counter()
    if variant.train_step is not None:
        model = train_model(variant.train_step, ctx)
    deployed = apply_transforms(variant.transform_steps, model, ctx)
    seconds = time.perf_counter() - start
    # A train-stage defense built a new model (its normalization fitted on its own data).
    model_info(deployed).spec = model_info(model).spec or meta["model"]
    if quant_layers(deployed):
        size = export_quantized(deployed, out)["size"]
    else:
        save_checkpoint(out, deployed, {"model": model_info(deployed).spec, "dataset": ds.name})
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
            "variants": {n: {"test_accuracy": v.test_accuracy, AUC: v.attacks[attack].mean[AUC],
                             TPR_1: v.attacks[attack].mean[TPR_1]} for n, v in results.variants.items()}}  # fmt: skip


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
    out = prepare_export_folder(Path(args.out), Path(args.out) / "none")
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


def add_parser(sub: argparse._SubParsersAction) -> None:
    from privquant.defenses import defense_names, get_defense

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
