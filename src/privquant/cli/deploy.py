"""Quantize and defend: a checkpoint (or the user's own data and model) to an export."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from privquant.cli.common import _at_least, _bits_argument, _count, yaml_flag
from privquant.errors import ConfigError

if TYPE_CHECKING:
    from privquant.defenses import VariantConfig


def _deploy_checkpoint(args: argparse.Namespace, variant: VariantConfig) -> int:
    from privquant.pipeline.ship import Owner, deploy_checkpoint
    from privquant.training import TrainConfig

    owner = Owner(data=args.data, train_size=args.train_size, seed=args.seed, reference_size=args.reference_size,
                  fallback=TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size))  # fmt: skip
    summary = deploy_checkpoint(args.checkpoint, variant, args.out, owner, onnx=args.onnx,
                                onnx_int8=getattr(args, "onnx_int8", False),
                                audit_shadows=args.audit_shadows if getattr(args, "audit", False) else None)  # fmt: skip
    print(json.dumps(summary, indent=2))
    return 0


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
    from privquant.defenses.recipes import default_recipe

    steps: object = default_recipe(args.bits)
    if args.steps is not None:
        steps = yaml_flag(args.steps, "--steps")
        steps = [steps] if isinstance(steps, dict) else steps
    if args.checkpoint is None:
        return _defend_from_data(args, _variant("defended", steps))
    return _deploy_checkpoint(args, _variant("defended", steps))


def _defend_from_data(args: argparse.Namespace, variant: VariantConfig) -> int:
    """``privquant defend --data ... --model ...``: a user's own model and data, one call."""
    from pydantic import ValidationError

    from privquant.pipeline.config import format_errors, load_plugins
    from privquant.pipeline.ship import defend_from_data
    from privquant.training import TrainConfig

    if not args.data or not args.model:
        raise ConfigError("defend without a checkpoint: give --data (your rows) and --model (registered, "
                          "e.g. from --plugin)")  # fmt: skip
    load_plugins(args.plugin, Path.cwd(), "--plugin")
    recipe = (yaml_flag(args.train_config, "--train-config") or {}) if args.train_config else {}
    if not isinstance(recipe, dict):
        raise ConfigError(
            f"--train-config: expected a mapping of TrainConfig fields, got {recipe!r}"
        )
    try:
        train = TrainConfig.model_validate(recipe)
    except ValidationError as e:
        raise ConfigError(format_errors(e, "--train-config")) from None
    summary = defend_from_data(args.data, args.model, variant, args.out, train=train,
                               train_size=args.train_size or 0, reference_size=args.reference_size,
                               seed=0 if args.seed is None else args.seed, onnx=args.onnx,
                               onnx_int8=args.onnx_int8)  # fmt: skip
    print(json.dumps(summary, indent=2))
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
