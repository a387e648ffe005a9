"""Bring your own model: audit a trained ``nn.Module`` with your member and non-member data."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from torch import nn

from privquant.attacks import Signals, run_attacks
from privquant.pipeline.config import VariantConfig
from privquant.pipeline.population import query_views
from privquant.pipeline.variants import fp32_size, make_variant
from privquant.quant import export_quantized
from privquant.training import TrainConfig, Trainer, evaluate, predict_logits, seed_everything


def audit_model(
    model: nn.Module,
    members: tuple[np.ndarray, np.ndarray],
    nonmembers: tuple[np.ndarray, np.ndarray],
    model_fn: Callable[[], nn.Module],
    train_config: TrainConfig,
    n_shadows: int = 4,
    variants: Sequence[VariantConfig] = (VariantConfig(name="fp32"),),
    attacks: str | Sequence[str] = (
        "loss",
        "shokri",
        "lira_online_fixed_var",
        "rmia",
        "label_only_correctness",
    ),
    test: tuple[np.ndarray, np.ndarray] | None = None,
    queries: int = 2,
    n_bootstrap: int = 200,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Audit ``model`` (already trained on ``members``) against membership inference.

    Members and non-members form the pool. ``n_shadows`` fresh models from ``model_fn`` train
    with ``train_config`` on random halves of that pool (the attacker's shadows); every variant
    (e.g. a PTQ or QAT config) is applied to your model and to each shadow, and every attack
    then targets your model. Inputs are uint8 images ``[N, C, H, W]`` or float features.
    Returns ``{"variants": {name: {...test_accuracy, size_bytes, attacks...}}}`` shaped like
    the pipeline's results.json.
    """
    (xm, ym), (xn, yn) = members, nonmembers
    x = np.concatenate([xm, xn])
    y = np.concatenate([ym, yn]).astype(np.int64)
    rng = np.random.default_rng(seed)
    keep = np.concatenate([np.ones((1, len(xm)), bool), np.zeros((1, len(xn)), bool)], axis=1)
    keep = np.concatenate([keep, rng.random((n_shadows, len(x))) < 0.5])
    base_models = [model.eval()]
    for s in range(n_shadows):
        seed_everything(seed + 1 + s)
        shadow = model_fn()
        Trainer(train_config.model_copy(update={"seed": seed + 1 + s})).fit(shadow, x[keep[s + 1]], y[keep[s + 1]],
                                                                            progress=progress)  # fmt: skip
        base_models.append(shadow)
    views = query_views("image" if x.ndim == 4 else "tabular", queries)
    out: dict[str, Any] = {
        "pool_size": len(x),
        "n_members": len(xm),
        "n_shadows": n_shadows,
        "variants": {},
    }
    for variant in variants:
        logits, size, test_acc = [], None, None
        for m, base in enumerate(base_models):
            qm = make_variant(
                variant, copy.deepcopy(base), x[keep[m]], y[keep[m]], train_config, seed + m
            )
            if m == 0:
                size = fp32_size(qm) if variant.method == "none" else _export_size(qm)
                test_acc = evaluate(qm, *test)["accuracy"] if test is not None else None
            o = predict_logits(qm, x, views=views)
            logits.append(o if o.ndim == 3 else o[:, None])
        res = run_attacks(Signals(np.stack(logits), y, keep), [0], attacks, n_bootstrap=n_bootstrap, seed=seed,
                          progress=progress)  # fmt: skip
        out["variants"][variant.name] = {"size_bytes": size["total_bytes"], "size": size, "test_accuracy": test_acc,
                                         "attacks": res["attacks"]}  # fmt: skip
    return out


def _export_size(qmodel: nn.Module) -> dict[str, Any]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return export_quantized(qmodel, tmp)["size"]
