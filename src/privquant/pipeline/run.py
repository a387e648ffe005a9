"""The audit pipeline, top to bottom: data -> models -> variants -> signals -> attacks -> report.

Every expensive step is cached on disk (models and deployed variants by content hash, signals
and attack results per variant), so an interrupted run resumes where it stopped and ends with
the same numbers.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from tqdm.auto import tqdm

import privquant
from privquant.artifacts import ArtifactCache, atomic_write_json, code_version, content_hash
from privquant.artifacts.atomic import atomic_write_bytes
from privquant.artifacts.cache import MODEL_CODE_ROOTS
from privquant.attacks import run_attacks
from privquant.data import Dataset, load_dataset
from privquant.defenses import VariantConfig, apply_outputs, get_defense
from privquant.machine import machine_info
from privquant.membership import MembershipSplit, make_split
from privquant.pipeline.config import AuditConfig
from privquant.population import (
    DeployJob,
    bits_label,
    context_for,
    deploy_one,
    load_deployed,
    model_factory,
    train_population,
)
from privquant.results import AttackResult, AuditResults, Curves, ModelRecord, VariantResult
from privquant.signals import Signals, View, query_logits, query_views
from privquant.training import evaluate

SIGNALS_CODE = (*MODEL_CODE_ROOTS, "privquant.signals")
ATTACK_CODE = ("privquant.attacks", "privquant.metrics", "privquant.results")


def _read_if_key(path: Path, key: str) -> dict | None:
    """A cached JSON whose recorded key matches, else None (stale entries are recomputed)."""
    if not path.is_file():
        return None
    try:
        cached = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return cached if cached.get("key") == key else None


def _steps_identity(variant: VariantConfig) -> list[Any]:
    return [[s.model_dump(mode="json"), get_defense(s.method).code] for s in variant.steps]


def _population_key(variant: VariantConfig) -> str:
    return "plain" if variant.train_step is None else content_hash(variant.train_step)


def _train_populations(
    config: AuditConfig, ds: Dataset, split: MembershipSplit, cache: ArtifactCache, progress: bool
) -> dict[str, list[Path]]:
    """One population per distinct train stage (plain training first); variants share them."""
    populations: dict[str, list[Path]] = {}
    for variant in config.variants:
        key = _population_key(variant)
        if key not in populations:
            populations[key] = train_population(ds, split, config.model.name, config.train, cache, config.model.options,
                                                defense=variant.train_step, progress=progress)  # fmt: skip
    return populations


def _signals_for_variant(
    config: AuditConfig,
    variant: VariantConfig,
    ds: Dataset,
    split: MembershipSplit,
    checkpoints: list[Path],
    cache: ArtifactCache,
    views: list[View],
    run_dir: Path,
    progress: bool,
) -> tuple[Signals, dict]:
    sig_path = run_dir / "signals" / f"{variant.name}.npz"
    meta_path = sig_path.with_suffix(".json")
    # Everything that determines these signals: an edited config never reuses stale ones.
    key = content_hash({"code": code_version(SIGNALS_CODE), "data": ds.checksum, "pool": split.pool,
                        "keep": split.keep, "reference": split.reference, "test": split.test,
                        "model": config.model, "train": config.train, "steps": _steps_identity(variant),
                        "queries": config.population.queries, "seed": config.seed})  # fmt: skip
    meta = _read_if_key(meta_path, key)
    if meta is not None and sig_path.is_file():
        return Signals.load(sig_path), meta
    x_pool, y_pool = ds.x_train[split.pool], ds.y_train[split.pool]
    x_test, y_test = ds.x_test[split.test], ds.y_test[split.test]
    model_fn = model_factory(config.model.name, ds.num_classes, config.model.options)
    logits, per_model = [], []
    start = time.perf_counter()
    bar = tqdm(checkpoints, desc=f"variant {variant.name}", unit="model", disable=not progress)
    for m, checkpoint in enumerate(bar):
        seed = config.seed + m
        train = config.train.model_copy(update={"seed": seed})
        job = DeployJob(index=m, checkpoint=checkpoint, members=split.members(m), train=train, seed=seed,
                        model=config.model.name, model_options=config.model.options,
                        transforms=tuple(variant.transform_steps), reference=split.reference)  # fmt: skip
        model, size = load_deployed(deploy_one(job, ds, cache))
        if variant.output_steps:
            ctx = context_for(ds, job.members, split.reference, train, seed, model_fn, cache)
            model = apply_outputs(variant.output_steps, model, ctx)
        out = query_logits(model, x_pool, views)
        logits.append(out)
        member = split.keep[m]
        per_model.append({
            # Test accuracy is reported for targets only; scoring every shadow would double query time.
            "test_accuracy": evaluate(model, x_test, y_test)["accuracy"] if m in config.targets else None,
            "train_accuracy": float((out[member, 0].argmax(-1) == y_pool[member]).mean()),
            "size_bytes": int(size["total_bytes"]),
            "bits": bits_label(size),
        })  # fmt: skip
    signals = Signals(np.stack(logits), y_pool, split.keep)
    meta = {"key": key, "per_model": per_model, "seconds": time.perf_counter() - start}
    signals.save(sig_path)
    atomic_write_json(meta_path, meta)
    return signals, meta


def _attack_variant(
    config: AuditConfig,
    signals: Signals,
    reference: Signals | None,
    out_path: Path,
    progress: bool,
) -> dict[str, AttackResult]:
    """Attack results for one variant; with ``reference``, shadows are its (full-precision) rows."""
    key = content_hash({"code": code_version(ATTACK_CODE), "logits": signals.logits,
                        "reference": None if reference is None else reference.logits, "keep": signals.keep,
                        "attacks": config.attacks, "targets": config.targets, "bootstrap": config.bootstrap,
                        "seed": config.seed})  # fmt: skip
    cached = _read_if_key(out_path, key)
    if cached is not None:
        return {a: AttackResult.model_validate(r) for a, r in cached["results"].items()}
    collected: dict[str, dict[str, Any]] = {}
    for target in tqdm(
        config.targets, desc=f"attack {out_path.stem}", unit="target", disable=not progress
    ):
        sig = signals
        if reference is not None:  # naive attacker: target quantized, shadows full precision
            logits = reference.logits.copy()
            logits[target] = signals.logits[target]
            sig = Signals(logits, signals.labels, signals.keep)
        res = run_attacks(sig, [target], config.attacks, n_bootstrap=config.bootstrap, seed=config.seed,
                          progress=False, keep_scores=True)  # fmt: skip
        for name, entry in res["attacks"].items():
            slot = collected.setdefault(
                name, {"description": entry["description"], "per_target": {}, "curves": {}}
            )
            slot["per_target"][str(target)] = entry["per_target"][str(target)]
            slot["curves"][str(target)] = Curves.from_scores(
                entry["scores"][str(target)], signals.keep[target]
            )
    results = {
        name: AttackResult.from_targets(s["description"], s["per_target"], s["curves"])
        for name, s in collected.items()
    }
    atomic_write_json(out_path, {"key": key, "results": {a: r.model_dump(mode="json") for a, r in results.items()}},
                      sort_keys=False)  # fmt: skip
    return results


def run_audit(config: AuditConfig, run_dir: str | Path, progress: bool = True) -> AuditResults:
    """Run the whole audit described by ``config`` into ``run_dir``; return its results."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    atomic_write_bytes(
        run_dir / "config.yaml",
        yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False).encode(),
    )

    ds = load_dataset(config.data.name)
    split = make_split(len(ds.y_train), len(ds.y_test), config.data.pool_size, config.population.n_models,
                       config.data.reference_size, config.data.test_size, seed=config.seed,
                       balanced=config.population.balanced)  # fmt: skip
    split.save(run_dir / "split.npz")
    cache = ArtifactCache(config.cache_dir or run_dir / "cache")

    start = time.perf_counter()
    populations = _train_populations(config, ds, split, cache, progress)
    timings["train_models"] = time.perf_counter() - start

    views = query_views(ds.kind, config.population.queries)
    variants: dict[str, VariantResult] = {}
    signals: dict[str, Signals] = {}
    start = time.perf_counter()
    for variant in config.variants:
        checkpoints = populations[_population_key(variant)]
        signals[variant.name], meta = _signals_for_variant(config, variant, ds, split, checkpoints, cache, views,
                                                           run_dir, progress)  # fmt: skip
        per_model = [ModelRecord(**r) for r in meta["per_model"]]
        targets = [per_model[t] for t in config.targets]
        variants[variant.name] = VariantResult(
            steps=[s.model_dump(mode="json") for s in variant.steps],
            description=variant.describe(),
            bits=targets[0].bits,
            size_bytes=targets[0].size_bytes,
            test_accuracy=float(np.mean([r.test_accuracy for r in targets])),
            test_accuracy_std=float(np.std([r.test_accuracy for r in targets])),
            train_accuracy=float(np.mean([r.train_accuracy for r in targets])),
            per_model=per_model,
        )
    timings["variants_and_signals"] = time.perf_counter() - start

    start = time.perf_counter()
    for variant in config.variants:
        out = run_dir / "attacks" / f"{variant.name}.json"
        v = variants[variant.name]
        v.attacks = _attack_variant(config, signals[variant.name], None, out, progress)
        if config.naive and variant.name != "fp32":
            naive = out.with_suffix(".naive.json")
            v.attacks_naive_fp32_shadows = _attack_variant(
                config, signals[variant.name], signals["fp32"], naive, progress
            )
    timings["attacks"] = time.perf_counter() - start
    timings["total"] = time.perf_counter() - t0

    results = AuditResults(
        privquant_version=privquant.__version__,
        config=config.model_dump(mode="json"),
        dataset={k: v for k, v in ds.info().items() if k != "extra"},
        split=split.summary(),
        machine=machine_info(),
        timings_seconds=timings,
        variants=variants,
    )
    results.fill_relative_changes()
    results.save(run_dir / "results.json")
    from privquant.report import render_report

    render_report(results, run_dir)
    return results
