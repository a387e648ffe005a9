"""Bring your own model: audit a trained ``nn.Module`` with your member and non-member data.

Reuses the pipeline's pieces: a membership split, population jobs for the shadows, the defense
steps of each variant, the attack suite and the typed results.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
from torch import nn

import privquant
from privquant.attacks import run_attacks
from privquant.data import Dataset
from privquant.defenses import VariantConfig, apply_outputs
from privquant.machine import machine_info
from privquant.membership import MembershipSplit, make_split
from privquant.population import (
    DeployJob,
    LocalExecutor,
    bits_label,
    context_for,
    deploy_model,
    population_jobs,
    train_job_model,
)
from privquant.quant.export import model_size
from privquant.results import (
    AttackResult,
    AuditResults,
    Curves,
    ModelRecord,
    TopPoint,
    VariantResult,
)
from privquant.signals import Signals, query_logits, query_views
from privquant.training import TrainConfig, evaluate

DEFAULT_ATTACKS = (
    "loss",
    "shokri",
    "lira_online_fixed_var",
    "rmia",
    "rmia_online",
    "label_only_correctness",
)


def _user_data(
    members: tuple[np.ndarray, np.ndarray],
    nonmembers: tuple[np.ndarray, np.ndarray],
    reference: tuple[np.ndarray, np.ndarray] | None,
    test: tuple[np.ndarray, np.ndarray] | None,
) -> tuple[Dataset, int]:
    """Pool (members then non-members) followed by the reference rows, as one in-memory dataset."""
    from privquant.errors import ConfigError

    named = {"members": members, "nonmembers": nonmembers, "reference": reference, "test": test}
    for name, part in named.items():
        if part is None:
            continue
        if not isinstance(part, tuple | list) or len(part) != 2:
            raise ConfigError(f"{name}: expected an (x, y) pair of arrays")
        if len(part[0]) != len(part[1]):
            raise ConfigError(f"{name}: {len(part[0])} inputs but {len(part[1])} labels; every "
                              "(x, y) pair must have one label per input")  # fmt: skip
    if not len(members[0]) or not len(nonmembers[0]):
        raise ConfigError("members and nonmembers: each needs at least one row")
    # Non-members that are (copies of) members make every score tie: "no leakage" by accident.
    member_rows = {np.ascontiguousarray(r).tobytes() for r in members[0]}
    shared = sum(np.ascontiguousarray(r).tobytes() in member_rows for r in nonmembers[0])
    if shared > len(nonmembers[0]) // 10:
        raise ConfigError(f"nonmembers: {shared} of {len(nonmembers[0])} rows are also in members; "
                          "non-members must be rows the model never trained on")  # fmt: skip
    parts = [members, nonmembers] + ([reference] if reference is not None else [])
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts]).astype(np.int64)
    xt, yt = test if test is not None else (x[:0], y[:0])
    n_classes = int(max(y.max(), yt.max() if len(yt) else 0)) + 1
    ds = Dataset("user", "image" if x.ndim == 4 else "tabular", x, y, xt, np.asarray(yt, np.int64),
                 [str(c) for c in range(n_classes)], "audit_model")  # fmt: skip
    return ds, len(members[0]) + len(nonmembers[0])


def audit_model(
    model: nn.Module,
    members: tuple[np.ndarray, np.ndarray],
    nonmembers: tuple[np.ndarray, np.ndarray],
    model_fn: Callable[[], nn.Module],
    train_config: TrainConfig,
    n_shadows: int = 4,
    variants: Sequence[VariantConfig] = (VariantConfig(name="fp32"),),
    attacks: str | Sequence[str] = DEFAULT_ATTACKS,
    test: tuple[np.ndarray, np.ndarray] | None = None,
    reference: tuple[np.ndarray, np.ndarray] | None = None,
    queries: int = 1,
    n_bootstrap: int = 200,
    seed: int = 0,
    progress: bool = True,
) -> AuditResults:
    """Audit ``model`` (already trained on ``members``) against membership inference.

    Members and non-members form the pool. ``n_shadows`` fresh models from ``model_fn`` train
    with ``train_config`` on random halves of that pool (the attacker's shadows); every variant
    (any defense steps: PTQ, QAT, a train-stage defense, an output stage) is applied to your
    model and to each shadow the same way, and every attack then targets your model (model 0).
    A variant with a train-stage step retrains your model from ``model_fn`` on ``members``.
    ``reference`` rows (disjoint from the pool) are handed to defenses that use them. Inputs are
    uint8 images ``[N, C, H, W]`` or float features. ``queries`` > 1 adds flipped/shifted views,
    which help only if the models trained with those augmentations. Returns typed results shaped
    like the pipeline's results.json.
    """
    start = time.perf_counter()
    if n_shadows < 2:
        from privquant.errors import ConfigError

        raise ConfigError(
            f"n_shadows: at least 2 (attack thresholds are calibrated on shadows), got {n_shadows}"
        )
    ds, n_pool = _user_data(members, nonmembers, reference, test)
    n_ref = len(ds.y_train) - n_pool
    drawn = make_split(n_pool, len(ds.y_test), n_pool, 1 + n_shadows, seed=seed)
    keep = drawn.keep.copy()
    keep[0] = np.arange(n_pool) < len(members[0])  # the target's known membership
    split = MembershipSplit(np.arange(n_pool), keep, np.arange(n_pool, n_pool + n_ref),
                            np.arange(len(ds.y_test)), seed)  # fmt: skip
    user_fn = lambda x: model_fn()  # noqa: E731 (the user's factory takes no data)
    views = query_views(ds.kind, queries)
    executor = LocalExecutor()

    trained: dict[object, list[nn.Module]] = {}
    out: dict[str, VariantResult] = {}
    for variant in variants:
        step = variant.train_step
        key = None if step is None else step.model_dump_json()
        if key not in trained:
            recipe = train_config.model_copy(update={"seed": seed})  # model m trains with seed + m
            jobs = population_jobs(split, "user", recipe, defense=step)
            todo = jobs if step is not None else jobs[1:]  # plain: the target is the user's model
            models = executor.map(lambda j: train_job_model(j, ds, user_fn), todo,
                                  desc="shadows", progress=progress)  # fmt: skip
            trained[key] = models if step is not None else [model.eval(), *models]
        logits, records = [], []
        for m, base in enumerate(trained[key]):
            job = _deploy_job(m, split, train_config, seed, variant)
            deployed = deploy_model(job, base, ds, user_fn)
            # Every model of a variant has the same architecture and widths: one export measures all.
            if m == 0:
                size = model_size(deployed)
            if variant.output_steps:
                ctx = context_for(ds, job.members, split.reference, job.train, job.seed, user_fn)
                deployed = apply_outputs(variant.output_steps, deployed, ctx)
            o = query_logits(deployed, ds.x_train[:n_pool], views)
            logits.append(o)
            acc = (
                evaluate(deployed, ds.x_test, ds.y_test)["accuracy"]
                if m == 0 and len(ds.y_test)
                else None
            )
            train_acc = float((o[keep[m], 0].argmax(-1) == ds.y_train[:n_pool][keep[m]]).mean())
            records.append(ModelRecord(test_accuracy=acc, train_accuracy=train_acc,
                                       size_bytes=int(size["total_bytes"]), bits=bits_label(size)))  # fmt: skip
        signals = Signals(np.stack(logits), ds.y_train[:n_pool], keep)
        res = run_attacks(signals, [0], attacks, n_bootstrap=n_bootstrap, seed=seed, progress=progress,
                          keep_scores=True)  # fmt: skip
        target = records[0]
        out[variant.name] = VariantResult(
            steps=[s.model_dump(mode="json") for s in variant.steps], description=variant.describe(),
            bits=target.bits, size_bytes=target.size_bytes, test_accuracy=target.test_accuracy,
            test_accuracy_std=0.0 if target.test_accuracy is not None else None,
            train_accuracy=target.train_accuracy, per_model=records,
            attacks={a: AttackResult(description=e["description"], per_target=e["per_target"], mean=e["mean"],
                                     std=e["std"], curves={"0": Curves.from_scores(e["scores"]["0"], keep[0])},
                                     top_points={"0": TopPoint.top(e["scores"]["0"], keep[0], 16)})
                     for a, e in res["attacks"].items()},
        )  # fmt: skip
    results = AuditResults(
        privquant_version=privquant.__version__,
        config={"name": "audit_model", "seed": seed, "targets": [0], "n_shadows": n_shadows, "queries": queries,
                "train": train_config.model_dump(mode="json"), "bootstrap": n_bootstrap,
                "variants": [v.model_dump(mode="json") for v in variants], "model": {"name": type(model).__name__}},
        dataset={"name": "user", "kind": ds.kind, "pool_size": n_pool, "n_members": len(members[0]),
                 "reference_size": n_ref, "test_size": len(ds.y_test)},
        split=split.summary(), machine=machine_info(),
        timings_seconds={"total": time.perf_counter() - start}, variants=out,
    )  # fmt: skip
    if "fp32" in out:
        results.fill_relative_changes()
    return results


def _deploy_job(
    m: int, split: MembershipSplit, train: TrainConfig, seed: int, variant: VariantConfig
) -> DeployJob:
    return DeployJob(index=m, checkpoint=None, members=split.members(m),
                     train=train.model_copy(update={"seed": seed + m}), seed=seed + m, model="user",
                     transforms=tuple(variant.transform_steps), reference=split.reference)  # fmt: skip
