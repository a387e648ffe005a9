"""What ships: defense steps applied to a model, the export written, the audit of it.

What ``privquant quantize`` and ``privquant defend`` do, callable from Python: from a privquant
checkpoint (:func:`deploy_checkpoint`; the owner's rows are the ones it records, see
:mod:`privquant.population.owner`, so a defense fine-tunes, and an audit measures membership, on
what the model really trained on), or from the user's own data and registered model
(:func:`defend_from_data`).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from privquant.data import Dataset
from privquant.defenses import DefenseContext, VariantConfig
from privquant.errors import ConfigError, PrivquantError
from privquant.metrics import AUC, TPR_1
from privquant.models.info import model_info
from privquant.population.owner import (
    checkpoint_dataset,
    owner_context,
    owner_rows,
    prepare_export_folder,
    rows_from_record,
)
from privquant.training import TrainConfig


@dataclass(frozen=True)
class Owner:
    """What the checkpoint's owner has beside the model. ``train_size``/``seed`` None: what the
    checkpoint records; ``fallback``: the recipe of train-stage defenses when it records none."""

    data: str | None = None
    train_size: int | None = None
    seed: int | None = None
    reference_size: int = 0
    fallback: TrainConfig = field(
        default_factory=lambda: TrainConfig(epochs=2, lr=0.001, batch_size=256)
    )


def deploy_checkpoint(
    checkpoint: str | Path,
    variant: VariantConfig,
    out: str | Path,
    owner: Owner | None = None,
    *,
    onnx: bool = False,
    onnx_int8: bool = False,
    audit_shadows: int | None = None,
) -> dict[str, Any]:
    """Apply ``variant`` to the checkpoint through the one defense path and export it into
    ``out`` (integer export, or float weights; the output steps; ``defense.json``; optionally the
    ONNX graphs). ``audit_shadows``: also audit FP32 vs standard QAT vs the variant into
    ``out/audit``. Returns the summary the CLI prints."""
    from privquant.artifacts import atomic_write_json, load_checkpoint, save_checkpoint
    from privquant.data import load_dataset
    from privquant.defenses import apply_outputs, apply_transforms, train_model
    from privquant.defenses.serving import save_output_stage
    from privquant.quant import export_quantized, quant_layers
    from privquant.quant.export import model_size
    from privquant.training import evaluate

    owner = owner or Owner()
    if onnx_int8 and variant.output_steps:
        raise ConfigError(
            f"--onnx-int8: the int8 graph cannot carry the output steps "
            f"{[s.method for s in variant.output_steps]}, so it would release raw posteriors the "
            "audit never saw; drop --onnx-int8 (use --onnx) or the output steps"
        )
    out = prepare_export_folder(Path(out), Path(checkpoint))
    model, meta = load_checkpoint(checkpoint)
    rows_rec = rows_from_record(meta, owner.train_size, owner.seed, str(checkpoint))
    ds = load_dataset(checkpoint_dataset(meta, owner.data))
    rows, ref, rest = owner_rows(ds, rows_rec.train_size, rows_rec.rows_seed, owner.reference_size)
    ctx = owner_context(meta, ds, rows, ref, rows_rec.seed, owner.fallback)
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
    summary: dict[str, Any] = {
        "steps": [s.model_dump(mode="json") for s in variant.steps], "dataset": ds.name,
        "test_accuracy": test["accuracy"], "seconds": seconds, "size": size,
        "train_rows": int(len(ctx.x)), "train_rows_seed": rows_rec.rows_seed, "out": str(out.resolve()),
    }  # fmt: skip
    if onnx:
        from privquant.quant.onnx_export import export_onnx

        export_onnx(served, out / "model.onnx", ds.input_shape)
        summary["onnx"] = str((out / "model.onnx").resolve())
    if onnx_int8:
        from privquant.data import seeded_subset
        from privquant.quant.onnx_export import onnx_logits, onnx_session
        from privquant.quant.onnx_int8 import export_onnx_int8

        # Activation ranges from a sample of the owner's own training rows (what the owner has).
        calib = seeded_subset(len(ctx.x), 512, rows_rec.seed)
        path = export_onnx_int8(deployed, out / "model.int8.onnx", ds.input_shape, ctx.x[calib])
        logits = onnx_logits(onnx_session(path), ds.x_test)
        summary["onnx_int8"] = {
            "path": str(path.resolve()),
            "test_accuracy": float((logits.argmax(1) == ds.y_test).mean()),
        }
    if audit_shadows is not None:
        summary["audit"] = audit_checkpoint(checkpoint, ds, ctx, rows, rest, variant, out / "audit",
                                            audit_shadows, rows_rec.seed)  # fmt: skip
    return summary


def audit_checkpoint(
    checkpoint: str | Path,
    ds: Dataset,
    ctx: DefenseContext,
    rows: np.ndarray,
    rest: np.ndarray,
    variant: VariantConfig,
    out: Path,
    n_shadows: int,
    seed: int,
) -> dict[str, Any]:
    """Audit FP32 vs standard QAT vs ``variant``, target = the checkpoint, with fresh shadows.

    Members are the checkpoint's training rows ``rows``, non-members as many rows it never saw
    (``rest``: neither trained on nor reference); with fewer such rows, a seeded subset of
    members is used.
    """
    from privquant.artifacts import load_checkpoint
    from privquant.pipeline.byo import audit_model
    from privquant.report import render_report

    model, _ = load_checkpoint(checkpoint)
    k = min(len(rows), len(rest))
    if k < 50:
        raise PrivquantError(f"--audit: only {len(rest)} rows of {ds.name} are outside the training and "
                             "reference rows; an audit needs at least 50 non-members")  # fmt: skip
    if k < len(rows):
        print(
            f"privquant: auditing {k} of the {len(rows)} training rows (only {k} unseen rows)",
            file=sys.stderr,
        )
    members = np.sort(np.random.default_rng(seed).permutation(rows)[:k])
    nonmembers = np.sort(rest[:k])
    quant = next((s.quant for s in variant.steps if hasattr(s, "quant")), None)
    bits = quant.weight_bits if quant is not None else 4
    variants = [VariantConfig(name="fp32"),
                VariantConfig(name=f"qat{bits:g}", method="qat", quant={"weight_bits": bits}),
                VariantConfig(name="defended", steps=variant.steps)]  # fmt: skip
    x_fit = ctx.x
    results = audit_model(model, (ds.x_train[members], ds.y_train[members]),
                          (ds.x_train[nonmembers], ds.y_train[nonmembers]), lambda: ctx.model_fn(x_fit), ctx.train,
                          n_shadows=n_shadows, variants=variants, test=(ds.x_test, ds.y_test),
                          reference=None if ctx.x_reference is None else (ctx.x_reference, ctx.y_reference),
                          n_bootstrap=100, seed=seed, progress=True)  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    results.save(out / "results.json")
    report = render_report(results, out)
    attack = results.headline_attack()
    return {"report": str(report.resolve()), "attack": attack,
            "variants": {n: {"test_accuracy": v.test_accuracy, AUC: v.attacks[attack].mean[AUC],
                             TPR_1: v.attacks[attack].mean[TPR_1]} for n, v in results.variants.items()}}  # fmt: skip


def defend_from_data(
    data: str,
    model: str,
    variant: VariantConfig,
    out: str | Path,
    *,
    train: TrainConfig | None = None,
    train_size: int = 0,
    reference_size: int = 0,
    seed: int = 0,
    onnx: bool = False,
    onnx_int8: bool = False,
) -> dict[str, Any]:
    """Train registered ``model`` on the seeded ``train_size`` rows of ``data`` (0: all; a
    built-in name or npz:/csv:/folder: PATH) and defend it with ``variant``'s steps through
    :func:`privquant.defend`; export into ``out``. Returns the summary the CLI prints."""
    import privquant
    from privquant.data import load_dataset
    from privquant.population import model_factory

    out = prepare_export_folder(Path(out), Path(out) / "none")
    ds = load_dataset(data)
    rows, ref, _ = owner_rows(ds, train_size, seed, reference_size)
    factory = model_factory(model, ds.num_classes, {})
    sample = ds.x_train[rows]
    start = time.perf_counter()
    deployed = privquant.defend(lambda: factory(sample), train=(ds.x_train[rows], ds.y_train[rows]),
                                reference=(ds.x_train[ref], ds.y_train[ref]) if len(ref) else None,
                                recipe=[s.model_dump(mode="json") for s in variant.steps],
                                train_config=train or TrainConfig(), num_classes=ds.num_classes, seed=seed)  # fmt: skip
    deployed.save(out, onnx=onnx, int8=onnx_int8)
    test = deployed.evaluate(ds.x_test, ds.y_test)
    return {"dataset": ds.name, "model": model, "steps": [s.model_dump(mode="json") for s in variant.steps],
            "train_rows": int(len(rows)), "test_accuracy": test["accuracy"],
            "seconds": time.perf_counter() - start, "out": str(out.resolve())}  # fmt: skip
