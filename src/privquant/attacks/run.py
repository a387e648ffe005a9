"""Run attacks on signals for one or several targets and collect every metric."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from privquant.attacks.base import (
    get_attack,
    references_for,
    resolve_attack_names,
    shadow_thresholds,
)
from privquant.errors import ConfigError
from privquant.metrics import evaluate_scores
from privquant.metrics.evaluate import CI_METRICS
from privquant.results import aggregate_targets
from privquant.signals import Signals


def attack_scores(
    signals: Signals, name: str, target: int, **params: Any
) -> tuple[np.ndarray, dict[str, float]]:
    """Membership scores of every pool point against ``target`` and the shadow-chosen
    thresholds (``decision``, and for shadow-calibrated attacks ``fpr@1%`` / ``fpr@0.1%``)."""
    attack = get_attack(name)
    scores = np.asarray(
        attack.score(signals, target, references_for(signals, target), **params), dtype=np.float64
    )
    nan = int(np.isnan(scores).sum())
    if nan:  # a NaN sorts anywhere: every metric computed from it would be silently wrong
        raise ConfigError(f"attack {name}: {nan} of {len(scores)} scores against target {target} are NaN "
                          f"(check attack_params.{name} and the signals)")  # fmt: skip
    return scores, shadow_thresholds(attack, signals, target, params)


def run_attacks(
    signals: Signals,
    targets: Sequence[int] = (0,),
    attacks: str | Sequence[str] = "all",
    params: dict[str, dict[str, Any]] | None = None,
    n_bootstrap: int = 200,
    seed: int = 0,
    progress: bool = True,
    keep_scores: bool = False,
) -> dict[str, Any]:
    """Every metric of every attack against every target, plus mean and std over targets.

    Returns ``{"attacks": {name: {"per_target": {t: metrics}, "mean": ..., "std": ...}}}``.
    ``keep_scores`` also returns the raw scores (for ROC plots and histograms).
    """
    names = resolve_attack_names(attacks if isinstance(attacks, str) else list(attacks))
    missing = [n for n in names if not get_attack(n).available(signals)]
    if missing and attacks != "all":
        needs = {n: list(get_attack(n).requires) for n in missing}
        raise ConfigError(f"attacks: {needs} need measurements these signals do not carry "
                          "(for label_only_noise: population.noise_queries > 0)")  # fmt: skip
    names = [n for n in names if n not in missing]  # "all": whatever these signals support
    params = {n: get_attack(n).validate_params(p) for n, p in (params or {}).items()}
    out: dict[str, Any] = {"targets": list(map(int, targets)), "attacks": {}}
    jobs = [(n, t) for n in names for t in targets]
    bar = tqdm(jobs, desc="attacks", unit="attack", disable=not progress, leave=False)
    for name, target in bar:
        bar.set_postfix(attack=name, target=target)
        start = time.perf_counter()
        scores, thr = attack_scores(signals, name, int(target), **params.get(name, {}))
        metrics = evaluate_scores(scores, signals.keep[target], thr["decision"], n_bootstrap=n_bootstrap,
                                  seed=seed, audit_thresholds=thr)  # fmt: skip
        metrics["seconds"] = time.perf_counter() - start
        entry = out["attacks"].setdefault(
            name, {"description": get_attack(name).description, "per_target": {}}
        )
        entry["per_target"][str(target)] = metrics
        if keep_scores:
            entry.setdefault("scores", {})[str(target)] = scores
    for entry in out["attacks"].values():
        entry["mean"], entry["std"] = aggregate_targets(entry["per_target"])
    return out


SUMMARY_COLUMNS = (
    "auc",
    "tpr@1%fpr",
    "tpr@0.1%fpr",
    "tpr@0.01%fpr",
    "balanced_accuracy",
    "precision",
    "recall",
    "f1",
    "advantage",
)
assert set(SUMMARY_COLUMNS) <= set(CI_METRICS)


def format_table(results: dict[str, Any]) -> str:
    """A plain-text table of mean metrics over targets (± std when several targets)."""
    header = ["attack", *SUMMARY_COLUMNS]
    rows = [header]
    multi = len(results["targets"]) > 1
    for name, entry in results["attacks"].items():
        row = [name]
        for k in SUMMARY_COLUMNS:
            v = entry["mean"][k]
            row.append(f"{v:.3f}±{entry['std'][k]:.3f}" if multi else f"{v:.3f}")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [
        "  ".join(
            c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)
