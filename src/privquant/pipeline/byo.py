"""Bring your own model: audit a trained ``nn.Module`` with your member and non-member data.

An in-memory config and dataset through :func:`privquant.pipeline.run.run_audit`, the very
stages ``privquant run`` runs (training, deployment, queries, attacks, result assembly, report).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from torch import nn

from privquant.data import Dataset
from privquant.defenses import VariantConfig
from privquant.models import build_model
from privquant.models.info import model_info
from privquant.models.registry import register_user_model
from privquant.results import AuditResults
from privquant.training import TrainConfig


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
    model_fn: Callable[[], nn.Module] | str,
    train_config: TrainConfig,
    n_shadows: int = 4,
    variants: Sequence[VariantConfig] = (VariantConfig(name="fp32"),),
    attacks: str | Sequence[str] | None = None,
    test: tuple[np.ndarray, np.ndarray] | None = None,
    reference: tuple[np.ndarray, np.ndarray] | None = None,
    queries: int = 1,
    n_bootstrap: int = 200,
    seed: int = 0,
    progress: bool = True,
    model_options: dict[str, Any] | None = None,
    out: str | os.PathLike[str] | None = None,
    **config: Any,
) -> AuditResults:
    """Audit ``model`` (already trained on ``members``) against membership inference.

    Runs the pipeline ``privquant run`` runs, on an in-memory config and dataset: the pool is
    the members followed by the non-members, model 0 is your model (its membership is the given
    one), and ``n_shadows`` fresh models train with ``train_config`` on random halves of the
    pool (the attacker's shadows). Every variant (PTQ, QAT, a train-stage defense, an output
    stage) is applied to your model and to each shadow the same way; every attack targets your
    model. A variant with a train-stage step retrains model 0 on ``members``.

    ``model_fn``: a function returning a fresh, untrained model of your model's architecture
    (inputs as they come: uint8 images arrive scaled to [0, 1]), or the name of a registered
    model (with ``model_options``; shadows then fit their input normalization like every
    registered model). ``reference`` rows (disjoint from the pool) go to defenses that use them.
    ``queries`` > 1 adds flipped/shifted views. ``attacks``: None for the config's default list.
    ``out``: a folder for results.json and the report (default: results in memory only).
    ``seed`` seeds every draw and the training (model m trains with ``seed + m``, whatever
    ``train_config.seed`` says).
    Further keyword arguments are audit config fields (e.g. ``naive=True``,
    ``attack_params={...}``). The same data, model and seed through ``privquant run`` (data
    ``rows: ordered``, ``population.target_members``) give the same numbers: a test says so.
    """
    from privquant.errors import ConfigError
    from privquant.pipeline.run import run_audit

    if n_shadows < 2:
        raise ConfigError(
            f"n_shadows: at least 2 (attack thresholds are calibrated on shadows), got {n_shadows}"
        )
    ds, n_pool = _user_data(members, nonmembers, reference, test)
    if isinstance(model_fn, str):
        name, options = model_fn, dict(model_options or {})
        target = model
        if model_info(target).spec is None:
            raise ConfigError(f"model: a model of registered {name!r} is built by "
                              "privquant.models.build_model (it carries its spec)")  # fmt: skip
    else:
        if model_options:
            raise ConfigError("model_options: only with a registered model name as model_fn")
        name, options = register_user_model(model_fn), {}
        target = _as_registered(model, name, ds)
    spec = {
        "name": "audit_model",
        "seed": seed,
        "data": {"name": "user", "pool_size": n_pool, "reference_size": len(ds.y_train) - n_pool,
                 "rows": "ordered", "test_size": len(ds.y_test) or None},
        "model": {"name": name, "options": options},
        "train": {**train_config.model_dump(), "seed": seed},  # model m trains with seed + m
        "population": {"n_models": 1 + n_shadows, "queries": queries,
                       "target_members": len(members[0])},
        "variants": [v.model_dump() for v in variants],
        "targets": [0],
        "bootstrap": n_bootstrap,
        **({} if attacks is None else {"attacks": attacks}),
        **config,
    }  # fmt: skip
    audit = _validated(spec)
    if out is not None:
        return run_audit(audit, out, progress, dataset=ds, target=target)
    with tempfile.TemporaryDirectory(prefix="privquant-audit-") as tmp:
        return run_audit(audit, tmp, progress, dataset=ds, target=target)


def _validated(spec: dict[str, Any]) -> Any:
    from pydantic import ValidationError

    from privquant.errors import ConfigError
    from privquant.pipeline.config import AuditConfig, format_errors

    try:
        return AuditConfig.model_validate(spec)
    except ValidationError as e:
        raise ConfigError(format_errors(e, "audit_model")) from None


def _as_registered(model: nn.Module, name: str, ds: Dataset) -> nn.Module:
    """The user's trained module as the pipeline's models are: ``Normalize(identity)`` then the
    module, with the spec its checkpoint records (the module itself is not modified)."""
    import copy

    from privquant.errors import ConfigError
    from privquant.signals.format import _check_logits
    from privquant.training import predict_logits

    # The target's outputs first: a model ending in a softmax is the likeliest mismatch, and the
    # one that would understate leakage if it got through.
    _check_logits("model", predict_logits(model, ds.x_train[:64])[None])
    wrapped = build_model(name, ds.x_train.shape[1:], ds.num_classes)
    try:
        wrapped[1].load_state_dict(model.state_dict())
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if "\n" in str(e) else str(e)
        raise ConfigError(
            f"model_fn: builds a different architecture than model ({first})"
        ) from None
    # Keep the user's non-parameter state (e.g. a module in eval-only mode) as it is.
    wrapped[1] = copy.deepcopy(model).eval()
    return wrapped
