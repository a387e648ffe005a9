"""Calibration to a privacy target (a transform): try candidate deployments, audit each on data
the defender holds, ship the most accurate one that meets the target.

The internal audit is the defender's own: it knows its members, so it scores the candidate
model's loss, confidence and entropy on a sample of members against reference rows that no
step of this variant trained on (the *audit rows*: the last ``audit_rows`` reference rows in
the context's fixed shuffled order, withheld from the candidates), and takes the best of those
attacks' AUC, read in whichever direction separates better. That is a global-threshold attack with an oracle threshold sweep;
it needs no shadow models, reads no row of the evaluation (the context holds only the members
and the reference rows), and is cheap enough to run per candidate.

Keep the audit rows disjoint from reference rows a train-stage step uses: ``split_distill``,
``reference_distill`` and ``with_reference_rows`` take the *first* rows of the same shuffled
order, so they stay disjoint while the two counts add up to at most ``data.reference_size``.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, SerializeAsAny, field_validator
from torch import nn

from privquant.defenses.base import DEFENSES, DefenseConfig, DefenseContext, register_defense
from privquant.errors import ConfigError
from privquant.metrics.roc import auc
from privquant.models.info import model_info
from privquant.training import predict_logits


class PrivacyCalibration(DefenseConfig):
    """Pick, among candidate transform chains, the most accurate that an internal audit on
    defender-held rows finds at or below ``target_auc``."""

    method: Literal["calibrate"] = "calibrate"
    target_auc: float = Field(
        0.55, ge=0.5, le=1, description="internal audit AUC the deployed model must not exceed"
    )
    candidates: list[list[SerializeAsAny[DefenseConfig]]] = Field(
        min_length=1,
        description="transform chains to try, e.g. [[{method: qat, ...}], [{method: ptq, ...}]]",
    )
    audit_rows: int = Field(
        500, ge=50, description="reference rows held out for the audit (the last ones)"
    )

    def check(self) -> None:
        for chain in self.candidates:
            for step in chain:
                step.check()

    def reference_rows_needed(self) -> int:
        # the audit rows, plus what the hungriest candidate reads from the rest
        return self.audit_rows + max(
            (s.reference_rows_needed() for c in self.candidates for s in c), default=0
        )

    @field_validator("candidates", mode="before")
    @classmethod
    def _transform_chains(cls, v: Any) -> Any:
        from privquant.defenses.variant import _steps_adapter

        if not isinstance(v, list) or not all(isinstance(c, list) for c in v):
            raise ValueError("expected a list of candidates, each a list of {method: ...} steps")
        configs = tuple(d.config for d in DEFENSES.values())
        chains = []
        for i, chain in enumerate(v):
            items = [s.model_dump() if isinstance(s, DefenseConfig) else s for s in chain]
            steps = _steps_adapter(configs).validate_python(items)
            for s in steps:
                stage = DEFENSES[s.method].stage
                if stage != "transform":
                    raise ValueError(
                        f"candidates[{i}]: {s.method!r} is a {stage}-stage method; "
                        "candidates are transform chains (quantization, rounding, ...)"
                    )
            chains.append(steps)
        return chains


def _attack_scores(logits: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Per-row scores of the audit's attacks (higher: more member-like)."""
    logp = torch.from_numpy(logits).double().log_softmax(-1)
    p = logp.exp()
    loss = -logp[torch.arange(len(y)), torch.as_tensor(y, dtype=torch.long)]
    return {
        "loss": (-loss).numpy(),
        "confidence": p.max(-1).values.numpy(),
        "entropy": (p * logp).sum(-1).numpy(),  # negative entropy
    }


def internal_audit(
    model: nn.Module,
    members: tuple[np.ndarray, np.ndarray],
    holdout: tuple[np.ndarray, np.ndarray],
) -> dict[str, float]:
    """The defender's audit of ``model``: best loss/confidence/entropy AUC of ``members`` vs
    ``holdout`` (both held by the defender), and the accuracy on the holdout."""
    x_m, y_m = members
    x_h, y_h = holdout
    logits_m, logits_h = predict_logits(model, x_m), predict_logits(model, x_h)
    is_member = np.r_[np.ones(len(y_m), bool), np.zeros(len(y_h), bool)]
    s_m, s_h = _attack_scores(logits_m, y_m), _attack_scores(logits_h, y_h)
    aucs = {k: auc(np.r_[s_m[k], s_h[k]], is_member) for k in s_m}
    best = max(max(a, 1 - a) for a in aucs.values())  # an attacker may read either direction
    return {"auc": float(best), "accuracy": float((logits_h.argmax(-1) == y_h).mean())}


def audit_split(
    ctx: DefenseContext, audit_rows: int
) -> tuple[DefenseContext, tuple[np.ndarray, np.ndarray]]:
    """(context whose reference rows exclude the audit rows, the audit rows (x, y)). Refuses
    when fewer than ``audit_rows`` reference rows exist."""
    n_ref = 0 if ctx.x_reference is None else len(ctx.x_reference)
    if n_ref < audit_rows:
        raise ConfigError(
            f"calibrate: audit_rows {audit_rows} needs at least that many defender reference "
            f"rows, {n_ref} exist (data.reference_size)"
        )
    assert ctx.x_reference is not None and ctx.y_reference is not None
    # The audit rows are the tail of the context's shuffled order, not of the array: on a
    # class-sorted file the last rows would be the last classes only.
    order = ctx.reference_order()
    keep, audit = np.sort(order[: n_ref - audit_rows]), np.sort(order[n_ref - audit_rows :])
    rest = dataclasses.replace(ctx, x_reference=ctx.x_reference[keep],
                               y_reference=ctx.y_reference[keep])  # fmt: skip
    return rest, (ctx.x_reference[audit], ctx.y_reference[audit])


def calibrate(
    config: PrivacyCalibration, model: nn.Module, ctx: DefenseContext
) -> tuple[nn.Module, dict[str, float]]:
    """The chosen deployment and the audit's record (every candidate's AUC and accuracy)."""
    rest, holdout = audit_split(ctx, config.audit_rows)
    rng = np.random.default_rng(ctx.seed)
    pick = rng.choice(len(ctx.x), size=min(len(ctx.x), config.audit_rows), replace=False)
    members = (ctx.x[pick], ctx.y[pick])
    info: dict[str, float] = {"target_auc": config.target_auc}
    results = []
    for i, chain in enumerate(config.candidates):
        candidate = copy.deepcopy(model)
        for step in chain:
            candidate = DEFENSES[step.method].handler(step, candidate, rest)
        audit = internal_audit(candidate, members, holdout)
        info[f"candidate{i}_audit_auc"] = audit["auc"]
        info[f"candidate{i}_audit_accuracy"] = audit["accuracy"]
        results.append((candidate, audit))
    meeting = [i for i, (_, a) in enumerate(results) if a["auc"] <= config.target_auc]
    if meeting:  # the most accurate that meets the target; the first listed wins a tie
        chosen = max(meeting, key=lambda i: (results[i][1]["accuracy"], -i))
    else:  # none does: the least leaky, and the record says the target was missed
        chosen = min(range(len(results)), key=lambda i: (results[i][1]["auc"], i))
    model_out, audit = results[chosen]
    info.update(chosen=float(chosen), audit_auc=audit["auc"], audit_accuracy=audit["accuracy"],
                target_met=float(bool(meeting)))  # fmt: skip
    return model_out, info


@register_defense(PrivacyCalibration, "transform")
def _calibrate(config: PrivacyCalibration, model: nn.Module, ctx: DefenseContext) -> nn.Module:
    chosen, info = calibrate(config, model, ctx)
    model_info(chosen).defense_info = {
        **(model_info(chosen).defense_info or {}),
        **info,
    }
    return chosen
