"""The audit pipeline, top to bottom: data -> models -> variants -> signals -> attacks -> report.

Every expensive step is cached on disk (models by content hash, signals and attack results per
variant), so an interrupted run resumes where it stopped and ends with the same numbers.
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
from privquant.attacks import Signals, run_attacks
from privquant.attacks.run import NOT_AVERAGED
from privquant.data import load_dataset
from privquant.machine import machine_info
from privquant.membership import make_split
from privquant.metrics import relative_change, roc_curve
from privquant.pipeline.config import AuditConfig
from privquant.pipeline.population import query_views, train_population
from privquant.pipeline.variants import apply_variant, bits_label
from privquant.training import evaluate, predict_logits

ROC_GRID = np.logspace(-5, 0, 121)
RELATIVE_METRICS = ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "auc", "tpr@1%fpr",
                    "tpr@0.1%fpr", "advantage")  # fmt: skip


def _curves(scores: np.ndarray, members: np.ndarray) -> dict[str, Any]:
    """A compact, exact ROC (max TPR at FPR <= each grid value) and score histograms."""
    fpr, tpr, _ = roc_curve(scores, members)
    roc = [float(tpr[fpr <= g + 1e-12].max()) for g in ROC_GRID]
    finite = scores[np.isfinite(scores)]
    lo, hi = np.percentile(finite, [0.5, 99.5]) if len(finite) else (0.0, 1.0)
    edges = np.linspace(lo, hi if hi > lo else lo + 1, 41)
    clipped = np.clip(scores, edges[0], edges[-1])
    return {
        "roc_fpr": ROC_GRID.tolist(),
        "roc_tpr": roc,
        "hist_edges": edges.tolist(),
        "hist_members": np.histogram(clipped[members], edges)[0].tolist(),
        "hist_nonmembers": np.histogram(clipped[~members], edges)[0].tolist(),
    }


def _read_if_key(path: Path, key: str) -> dict | None:
    """A cached JSON whose recorded key matches, else None (stale entries are recomputed)."""
    if not path.is_file():
        return None
    try:
        cached = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return cached if cached.get("key") == key else None


def _signals_for_variant(
    config, variant, ds, split, paths, cache, views, run_dir, progress
) -> tuple[Signals, dict]:  # noqa: ANN001
    sig_path, meta_path = (
        run_dir / "signals" / f"{variant.name}.npz",
        run_dir / "signals" / f"{variant.name}.json",
    )
    # Everything that determines these signals: an edited config never reuses stale ones.
    key = content_hash({"code": code_version(), "data": ds.checksum, "pool": split.pool, "keep": split.keep,
                        "test": split.test, "model": config.model, "train": config.train, "variant": variant,
                        "queries": config.population.queries, "seed": config.seed})  # fmt: skip
    meta = _read_if_key(meta_path, key)
    if meta is not None and sig_path.is_file():
        return Signals.load(sig_path), meta
    x_pool, y_pool = ds.x_train[split.pool], ds.y_train[split.pool]
    x_test, y_test = ds.x_test[split.test], ds.y_test[split.test]
    logits, per_model = [], []
    start = time.perf_counter()
    for m, path in enumerate(
        tqdm(paths, desc=f"variant {variant.name}", unit="model", disable=not progress)
    ):
        model, size = apply_variant(
            variant, path, split.members(m), ds, config.train, cache, config.seed + m
        )
        out = predict_logits(model, x_pool, views=views)
        out = out if out.ndim == 3 else out[:, None]
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
    config, signals: Signals, reference: Signals | None, out_path: Path, progress: bool
) -> dict:  # noqa: ANN001
    """Attack results for one variant; with ``reference``, shadows are its (full-precision) rows."""
    key = content_hash({"code": code_version(("attacks", "metrics")), "logits": signals.logits,
                        "reference": None if reference is None else reference.logits, "keep": signals.keep,
                        "attacks": config.attacks, "targets": config.targets, "bootstrap": config.bootstrap,
                        "seed": config.seed})  # fmt: skip
    cached = _read_if_key(out_path, key)
    if cached is not None:
        return cached["results"]
    results: dict[str, Any] = {}
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
            slot = results.setdefault(
                name, {"description": entry["description"], "per_target": {}, "curves": {}}
            )
            scores = entry["scores"][str(target)]
            slot["per_target"][str(target)] = entry["per_target"][str(target)]
            slot["curves"][str(target)] = _curves(scores, signals.keep[target])
    for slot in results.values():
        rows = list(slot["per_target"].values())
        keys = [k for k, v in rows[0].items() if isinstance(v, float) and k not in NOT_AVERAGED]
        slot["mean"] = {k: float(np.mean([r[k] for r in rows])) for k in keys}
        slot["std"] = {k: float(np.std([r[k] for r in rows])) for k in keys}
    atomic_write_json(out_path, {"key": key, "results": results}, sort_keys=False)
    return results


def run_audit(config: AuditConfig, run_dir: str | Path, progress: bool = True) -> dict[str, Any]:
    """Run the whole audit described by ``config`` into ``run_dir``; return results.json's content."""
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
    paths = train_population(
        ds, split, config.model.name, config.train, cache, config.model.options, progress
    )
    timings["train_models"] = time.perf_counter() - start

    views = query_views(ds.kind, config.population.queries)
    variants: dict[str, Any] = {}
    signals: dict[str, Signals] = {}
    start = time.perf_counter()
    for variant in config.variants:
        signals[variant.name], meta = _signals_for_variant(config, variant, ds, split, paths, cache, views, run_dir,
                                                           progress)  # fmt: skip
        per_model = meta["per_model"]
        targets = config.targets
        variants[variant.name] = {
            "method": variant.method,
            "quant": variant.quant.model_dump(mode="json") if variant.quant else None,
            "bits": per_model[targets[0]]["bits"],
            "size_bytes": per_model[targets[0]]["size_bytes"],
            "test_accuracy": float(np.mean([per_model[t]["test_accuracy"] for t in targets])),
            "test_accuracy_std": float(np.std([per_model[t]["test_accuracy"] for t in targets])),
            "train_accuracy": float(np.mean([per_model[t]["train_accuracy"] for t in targets])),
            "per_model": per_model,
        }
    timings["variants_and_signals"] = time.perf_counter() - start

    start = time.perf_counter()
    for variant in config.variants:
        out = _attack_variant(
            config,
            signals[variant.name],
            None,
            run_dir / "attacks" / f"{variant.name}.json",
            progress,
        )
        variants[variant.name]["attacks"] = out
        if config.naive and variant.name != "fp32":
            naive = _attack_variant(config, signals[variant.name], signals["fp32"],
                                    run_dir / "attacks" / f"{variant.name}.naive.json", progress)  # fmt: skip
            variants[variant.name]["attacks_naive_fp32_shadows"] = naive
    timings["attacks"] = time.perf_counter() - start

    fp = variants["fp32"]
    for v in variants.values():
        v["relative_change_vs_fp32"] = {
            "test_accuracy": relative_change(fp["test_accuracy"], v["test_accuracy"]),
            **{a: {k: relative_change(fp["attacks"][a]["mean"][k], r["mean"][k]) for k in RELATIVE_METRICS}
               for a, r in v["attacks"].items()},
        }  # fmt: skip
    timings["total"] = time.perf_counter() - t0
    results = {
        "format": "privquant-results/1",
        "privquant_version": privquant.__version__,
        "config": config.model_dump(mode="json"),
        "dataset": {**{k: v for k, v in ds.info().items() if k != "extra"}},
        "split": split.summary(),
        "machine": machine_info(),
        "timings_seconds": timings,
        "variants": variants,
    }
    atomic_write_json(
        run_dir / "results.json", results, sort_keys=False
    )  # keep the config's variant order
    from privquant.report import render_report

    render_report(results, run_dir)
    return results
