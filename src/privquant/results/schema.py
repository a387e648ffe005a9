"""Typed, versioned audit results: what results.json holds, and the one place it is aggregated."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from privquant.artifacts.atomic import atomic_write_bytes, atomic_write_json
from privquant.errors import PrivquantError
from privquant.metrics import relative_change, roc_curve
from privquant.metrics.evaluate import AUC, THRESHOLD_METRICS, TPR_01, TPR_1

FORMAT = "privquant-results/2"
ROC_GRID = np.logspace(-5, 0, 121)  # FPR values at which curves are stored
NOT_AVERAGED = ("threshold", "seconds")  # per-target facts, not metrics
RELATIVE_METRICS = (*THRESHOLD_METRICS, AUC, TPR_1, TPR_01)


def aggregate_targets(
    per_target: dict[str, dict[str, Any]],
) -> tuple[dict[str, float], dict[str, float]]:
    """Mean and std over targets of every float metric (CIs and per-target facts excluded)."""
    rows = list(per_target.values())
    keys = [k for k, v in rows[0].items() if isinstance(v, float) and k not in NOT_AVERAGED]
    mean = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    std = {k: float(np.std([r[k] for r in rows])) for k in keys}
    return mean, std


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Curves(_Strict):
    """An exact ROC on a log grid (max TPR at FPR <= each value) and score histograms."""

    roc_fpr: list[float]
    roc_tpr: list[float]
    hist_edges: list[float]
    hist_members: list[int]
    hist_nonmembers: list[int]

    @classmethod
    def from_scores(cls, scores: np.ndarray, members: np.ndarray) -> Curves:
        fpr, tpr, _ = roc_curve(scores, members)
        roc = [float(tpr[fpr <= g + 1e-12].max()) for g in ROC_GRID]
        finite = scores[np.isfinite(scores)]
        lo, hi = np.percentile(finite, [0.5, 99.5]) if len(finite) else (0.0, 1.0)
        edges = np.linspace(lo, hi if hi > lo else lo + 1, 41)
        clipped = np.clip(scores, edges[0], edges[-1])
        return cls(roc_fpr=ROC_GRID.tolist(), roc_tpr=roc, hist_edges=edges.tolist(),
                   hist_members=np.histogram(clipped[members], edges)[0].tolist(),
                   hist_nonmembers=np.histogram(clipped[~members], edges)[0].tolist())  # fmt: skip


class TopPoint(_Strict):
    """A pool point with one of the highest membership scores (pool index, score, truth)."""

    index: int
    score: float
    member: bool

    @classmethod
    def top(cls, scores: np.ndarray, members: np.ndarray, n: int) -> list[TopPoint]:
        order = np.argsort(-scores, kind="stable")[:n]
        return [cls(index=int(i), score=float(scores[i]), member=bool(members[i])) for i in order]


class Findings(_Strict):
    """Per-example findings: the points the strongest attack is surest about, for one target."""

    attack: str
    variant: str
    target: int
    points: list[dict[str, Any]]
    image: str | None = Field(None, description="thumbnails, relative to the run folder")


class PooledTPR(_Strict):
    """TPR at one FPR level on the pooled ROC, its exact interval and what it rests on."""

    value: float
    ci: list[float] = Field(description="95% interval (threshold-aware Clopper-Pearson)")
    n_positives: int
    n_negatives: int
    expected_false_positives: float = Field(description="level x n_negatives")
    resolved: bool = Field(description="at least 10 expected false positives; else noise")


class Pooled(_Strict):
    """One attack's metrics over every target's leave-one-out scores at once, on one subset."""

    n_targets: int
    n_members: int
    n_nonmembers: int
    auc: float | None
    auc_ci: list[float] | None = Field(description="95% stratified bootstrap interval")
    tpr: dict[str, PooledTPR] = Field(default_factory=dict)
    decision: dict[str, float] = Field(
        default_factory=dict, description="at each target's shadow-chosen decision threshold"
    )
    roc: Curves | None = None


SUBSETS = ("all", "canaries", "rest")  # pool points; canaries only; every non-canary point


class AttackResult(_Strict):
    description: str
    per_target: dict[str, dict[str, Any]] = Field(
        description="target index -> every metric, its CI ('ci') and the threshold"
    )
    mean: dict[str, float]
    std: dict[str, float]
    curves: dict[str, Curves] = Field(default_factory=dict)
    top_points: dict[str, list[TopPoint]] = Field(
        default_factory=dict, description="per target, the highest-scoring pool points"
    )
    pooled: dict[str, Pooled] = Field(
        default_factory=dict,
        description="subset ('all', 'canaries', 'rest') -> metrics pooled over every target",
    )
    subset_means: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="subset -> every metric, mean over targets"
    )

    def lead_subset(self) -> str:
        """Where worst-case leakage is read: the canaries when the audit planted them."""
        return "canaries" if "canaries" in self.pooled else "all"

    def population_subset(self) -> str:
        """Where population leakage is read: every non-canary point (all points without canaries)."""
        return "rest" if "rest" in self.pooled else "all"

    @classmethod
    def from_targets(
        cls,
        description: str,
        per_target: dict[str, dict[str, Any]],
        curves: dict[str, Curves] | None = None,
        top_points: dict[str, list[TopPoint]] | None = None,
        pooled: dict[str, Pooled] | None = None,
        subset_means: dict[str, dict[str, float]] | None = None,
    ) -> AttackResult:
        mean, std = aggregate_targets(per_target)
        return cls(description=description, per_target=per_target, mean=mean, std=std,
                   curves=curves or {}, top_points=top_points or {}, pooled=pooled or {},
                   subset_means=subset_means or {})  # fmt: skip


class ModelRecord(_Strict):
    test_accuracy: float | None = Field(description="measured for targets only")
    train_accuracy: float
    size_bytes: int
    bits: float
    defense_info: dict[str, float] | None = Field(
        None, description="what the train-stage defense recorded (DP-SGD: epsilon, delta, ...)"
    )
    trained_on: str | None = Field(
        None, description="where the model trained (device, torch), as its checkpoint recorded "
        "it; None for checkpoints written before this was recorded",
    )  # fmt: skip
    query_layout: str | None = Field(
        None, description="the fp32 memory layout the audit queried it in (nchw or channels_last), "
        "measured faster here; None for results written before this was recorded",
    )  # fmt: skip


class VariantResult(_Strict):
    steps: list[dict[str, Any]] = Field(description="the variant's defense steps, as configured")
    description: str
    bits: float
    size_bytes: int
    test_accuracy: float | None = Field(description="mean over targets; None without test data")
    test_accuracy_std: float | None
    train_accuracy: float
    per_model: list[ModelRecord] = Field(default_factory=list)
    defense_info: dict[str, float] | None = Field(
        None, description="the targets' defense_info, averaged (DP-SGD: the epsilon spent)"
    )
    attacks: dict[str, AttackResult] = Field(default_factory=dict)
    attacks_naive_fp32_shadows: dict[str, AttackResult] | None = Field(
        None, description="the weaker setting: target under the variant, shadows full precision"
    )
    relative_change_vs_fp32: dict[str, Any] = Field(
        default_factory=dict, description="(FP32 - variant) / FP32 per attack and metric"
    )


def trained_on_counts(variants: dict[str, VariantResult]) -> dict[str, int]:
    """How many of the models trained where (results.json's ``machine.trained_on``): a carried
    population may have trained on another host or a GPU. Variants with one train-stage step share
    its population, counted once."""
    from privquant.defenses import get_defense

    populations: dict[str, list[ModelRecord]] = {}
    for v in variants.values():
        train = [s for s in v.steps if get_defense(s["method"]).stage == "train"]
        populations.setdefault(json.dumps(train, sort_keys=True), v.per_model)
    where = Counter(r.trained_on or "not recorded" for rs in populations.values() for r in rs)
    return dict(sorted(where.items()))


class AuditResults(_Strict):
    format: Literal["privquant-results/2"] = FORMAT
    privquant_version: str
    config: dict[str, Any]
    dataset: dict[str, Any]
    split: dict[str, Any]
    machine: dict[str, Any]
    timings_seconds: dict[str, float]
    variants: dict[str, VariantResult]
    findings: Findings | None = None
    warnings: list[str] = Field(
        default_factory=list, description="what makes these numbers weaker than they look"
    )

    def degenerate_warnings(self) -> list[str]:
        """Conditions under which the audit's numbers mislead, in words (the report leads with them)."""
        out = []
        classes = self.dataset.get("num_classes") or len(self.dataset.get("classes") or []) or None
        fp = self.variants.get("fp32")
        if fp is not None and fp.test_accuracy is not None and classes:
            chance = 1 / classes
            if fp.test_accuracy <= chance + 0.05:
                out.append(f"FP32 test accuracy {100 * fp.test_accuracy:.1f}% is at chance ({100 * chance:.0f}% "
                           f"for {classes} classes): the models did not learn, so low leakage says nothing "
                           "about a model anyone would ship")  # fmt: skip
        n_models = int(self.split.get("n_models", 0) or 0)
        online = [a for a in self.attack_names if "online" in a]
        if online and 0 < n_models < 8:
            per = (n_models - 1) / 2
            out.append(f"{', '.join(online)} with {n_models} models: about {per:g} IN and {per:g} OUT reference "
                       "models per point, so their per-point statistics rest on 1-3 values; use 8 or more "
                       "models for a strong online attacker")  # fmt: skip
        return out

    @property
    def targets(self) -> list[int]:
        """The attacked models (``targets: all`` resolved to every model of the split)."""
        t = self.config.get("targets", [0])
        return list(range(int(self.split["n_models"]))) if t == "all" else [int(x) for x in t]

    @property
    def attack_names(self) -> list[str]:
        return list(next(iter(self.variants.values())).attacks)

    def headline_attack(self) -> str:
        """The strongest attack on the full-precision model: highest TPR at 1% FPR, then AUC."""
        reference = self.variants.get("fp32") or next(iter(self.variants.values()))
        return max(reference.attacks, key=lambda a: (reference.attacks[a].mean["tpr@1%fpr"],
                                                     reference.attacks[a].mean["auc"]))  # fmt: skip

    def fill_relative_changes(self, reference: str = "fp32") -> None:
        """(reference - variant) / reference for test accuracy and every attack metric."""
        fp = self.variants[reference]
        for v in self.variants.values():
            v.relative_change_vs_fp32 = {
                "test_accuracy": None if fp.test_accuracy is None or v.test_accuracy is None
                else relative_change(fp.test_accuracy, v.test_accuracy),
                **{a: {k: relative_change(fp.attacks[a].mean[k], r.mean[k]) for k in RELATIVE_METRICS}
                   for a, r in v.attacks.items() if a in fp.attacks},
            }  # fmt: skip

    def tidy(self) -> list[dict[str, Any]]:
        """One row per variant x attack x target (adaptive and, where run, naive setting), with
        the variant's accuracy, size and bits and every float metric: ready for
        ``pandas.DataFrame(results.tidy())``."""
        rows = []
        for name, v in self.variants.items():
            settings = [("adaptive", v.attacks), ("naive", v.attacks_naive_fp32_shadows or {})]
            for setting, attacks in settings:
                for attack, r in attacks.items():
                    for target, metrics in r.per_target.items():
                        rows.append({"variant": name, "steps": v.description, "setting": setting,
                                     "attack": attack, "target": int(target), "bits": v.bits,
                                     "size_bytes": v.size_bytes, "test_accuracy": v.test_accuracy,
                                     **{k: x for k, x in metrics.items() if isinstance(x, float)}})  # fmt: skip
        return rows

    def save(self, path: str | os.PathLike[str], compact: bool = False) -> None:
        data = self.model_dump(mode="json")
        if compact:  # for committing results: one line, no indentation
            atomic_write_bytes(path, (json.dumps(data, separators=(",", ":")) + "\n").encode())
        else:
            atomic_write_json(path, data, sort_keys=False)

    def thinned(self, keep_every: int = 4) -> AuditResults:
        """A copy whose ROC curves keep every ``keep_every``-th grid point (and the last)."""
        out = self.model_copy(deep=True)
        for v in out.variants.values():
            for attacks in (v.attacks, v.attacks_naive_fp32_shadows or {}):
                for a in attacks.values():
                    pooled = [p.roc for p in a.pooled.values() if p.roc is not None]
                    for c in [*a.curves.values(), *pooled]:
                        idx = sorted(
                            set(range(0, len(c.roc_fpr), keep_every)) | {len(c.roc_fpr) - 1}
                        )
                        c.roc_fpr = [c.roc_fpr[i] for i in idx]
                        c.roc_tpr = [c.roc_tpr[i] for i in idx]
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> AuditResults:
        """Read results.json (or a run folder holding one), with errors naming the file."""
        path = Path(path)
        if path.is_dir():
            path = path / "results.json"
        try:
            data = json.loads(path.read_text())
        except OSError as e:
            raise PrivquantError(f"{path}: cannot read results ({e.strerror or e})") from e
        except json.JSONDecodeError as e:
            raise PrivquantError(f"{path}: not valid JSON ({e})") from e
        if isinstance(data, dict) and data.get("format") == "privquant-results/1":
            data = _upgrade_v1(data)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            got = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise PrivquantError(f"{path}: unknown format {got!r}; expected {FORMAT}")
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise PrivquantError(f"{path}: invalid results at {where}: {first['msg']}") from None


def _upgrade_v1(data: dict[str, Any]) -> dict[str, Any]:
    """results.json of privquant <= 0.1 (variants as method + quant) in the current schema."""
    configured = {v["name"]: v for v in data.get("config", {}).get("variants", [])}
    for name, v in data.get("variants", {}).items():
        method, quant = v.pop("method", "none"), v.pop("quant", None)
        step = {k: x for k, x in configured.get(name, {}).items() if k != "name"}
        step = step or {"method": method, **({"quant": quant} if quant else {})}
        v["steps"] = [] if method == "none" else [step]
        v["description"] = method if method != "none" else "none"
    data["format"] = FORMAT
    return data
