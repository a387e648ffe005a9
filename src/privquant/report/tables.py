"""Markdown tables generated from committed results.json files, so no number in the docs is
copied by hand.

A table is a block in a markdown file::

    <!-- table
    results: docs/results/strict_fashion_mnist/results.json
    rows: [[fp32, FP32], [qat4, standard QAT], {divider: "*2 bits*"}, [defended2, privquant default]]
    columns: [bits, test_acc, worst1, pop01, shokri]
    -->
    | ... generated ... |
    <!-- /table -->

``rows`` entries are ``variant``, ``[variant, label]`` (or ``{variant, label, results}`` to read another
results file, or ``{divider: text}``); ``columns`` are names from :data:`COLUMNS`. A ``claims``
block (``kind: claims``) states targets and says met / missed / not resolved from the
intervals; a ``tune`` block (``kind: tune``) lists a ``privquant tune`` sweep; a
``learning_curve`` block (``kind: learning_curve``) puts one variant's cost and gain at several
audit sizes side by side. :func:`render_file` fills every block; :func:`check_files` says which
are stale.

Results written before pooled metrics existed (means over a few targets) still render: their
TPR interval is the range of the targets' bootstrap intervals, and the caption says so.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from scipy.stats import t as student_t

from privquant.errors import PrivquantError
from privquant.metrics import AUC, TPR_01, TPR_1, relative_change
from privquant.results import AttackResult, AuditResults, VariantResult
from privquant.results.pareto import FPR_BY_KEY, Leak, attack_leak, worst_leak

BLOCK = re.compile(r"(<!-- table\n(?P<spec>.*?)-->\n)(?P<body>.*?)(<!-- /table -->)", re.S)
LIRA_RMIA = ("lira", "rmia")
METRICS = {"worst1": ("lead", TPR_1), "worst01": ("lead", TPR_01),
           "pop1": ("population", TPR_1), "pop01": ("population", TPR_01)}  # fmt: skip


def _legacy_leak(result: AttackResult, key: str, attack: str) -> Leak:
    """Mean over targets, with the range of the targets' own bootstrap intervals."""
    leak = attack_leak(result, "all", key, attack)
    cis = [r["ci"][key] for r in result.per_target.values() if "ci" in r and key in r["ci"]]
    ci = (min(c[0] for c in cis), max(c[1] for c in cis)) if cis else None
    resolved = all(
        FPR_BY_KEY[key] * r.get("n_nonmembers", 0) >= 10 for r in result.per_target.values()
    )
    return Leak(leak.value, ci, attack, resolved, leak.n_negatives)


def _leak(v: VariantResult, subset: str, key: str) -> Leak:
    attacks = v.attacks
    if next(iter(attacks.values())).pooled:
        first = next(iter(attacks.values()))
        sub = first.lead_subset() if subset == "lead" else first.population_subset()
        return worst_leak(attacks, sub, key)
    return max((_legacy_leak(r, key, a) for a, r in attacks.items()), key=lambda x: x.value)


def _attack_cells(v: VariantResult, attack: str) -> str:
    """AUC / TPR@1% / TPR@0.1% of one attack (lead subset pooled, else mean over targets)."""
    r = v.attacks.get(attack)
    if r is None:
        return "–"
    if r.pooled:
        sub = r.lead_subset()
        leaks = [attack_leak(r, sub, k, attack) for k in (TPR_1, TPR_01)]
        return f"{r.pooled[sub].auc:.3f} / {leaks[0].text()} / {leaks[1].text(2)}"
    leaks = [_legacy_leak(r, k, attack) for k in (TPR_1, TPR_01)]
    return f"{r.mean['auc']:.3f} / {leaks[0].text()} / {leaks[1].text(2)}"


def _auc(v: VariantResult, attack: str) -> float | None:
    r = v.attacks.get(attack)
    if r is None:
        return None
    if r.pooled:
        return r.pooled[r.lead_subset()].auc
    return r.mean[AUC]


def _shokri(results: AuditResults, v: VariantResult, naive: bool) -> str:
    fp = results.variants["fp32"].attacks.get("shokri")
    attacks = v.attacks_naive_fp32_shadows if naive else v.attacks
    if fp is None or not attacks or "shokri" not in attacks:
        return "–"
    q = attacks["shokri"]
    rel = [relative_change(fp.mean[k], q.mean[k]) for k in ("accuracy", "recall", "f1")]
    return " / ".join("–" if r is None else f"{100 * r:+.1f}%" for r in rel)


def _shokri_paper(v: VariantResult) -> str:
    """The paper's (Famili & Lao) table: the Shokri attack's accuracy, precision, recall, F1."""
    q = v.attacks.get("shokri")
    if q is None:
        return "–"
    return " / ".join(f"{100 * q.mean[k]:.1f}" for k in ("accuracy", "precision", "recall", "f1"))


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}%"


Cell = Callable[[AuditResults, VariantResult], str]
COLUMNS: dict[str, tuple[str, Cell]] = {
    "bits": ("bits", lambda r, v: f"{v.bits:.2f}"),
    "bytes": ("bytes", lambda r, v: f"{v.size_bytes:,}"),
    "train_acc": ("train acc", lambda r, v: _pct(v.train_accuracy)),
    "test_acc": ("test acc", lambda r, v: _pct(v.test_accuracy)),
    "worst1": ("worst TPR@1% FPR, worst-case subset [95% CI] (attack)",
               lambda r, v: f"{(x := _leak(v, 'lead', TPR_1)).text()} ({x.attack})"),
    "worst01": ("worst TPR@0.1% FPR, worst-case subset [95% CI]",
                lambda r, v: _leak(v, "lead", "tpr@0.1%fpr").text(2)),
    "pop1": ("population TPR@1% FPR [95% CI]", lambda r, v: _leak(v, "population", TPR_1).text()),
    "pop01": ("population TPR@0.1% FPR [95% CI] (attack)",
              lambda r, v: f"{(x := _leak(v, 'population', 'tpr@0.1%fpr')).text(2)} ({x.attack})"),
    "strongest_auc": ("strongest LiRA/RMIA AUC", lambda r, v: "–" if not (
        aucs := [a for n in v.attacks if n.startswith(LIRA_RMIA) and (a := _auc(v, n)) is not None])
        else f"{max(aucs):.3f}"),
    "label_only": ("label-only AUC, worst-case subset", lambda r, v: "–" if (a := _auc(v, "label_only_correctness")) is None
                   else f"{a:.3f}"),
    "shokri": ("Shokri Δacc / ΔTPR / ΔF1 vs FP32, adaptive (threshold-dependent)",
               lambda r, v: _shokri(r, v, False)),
    "shokri_paper": ("Shokri acc / precision / recall / F1 %, adaptive (the paper's table; threshold-dependent)",
                     lambda r, v: _shokri_paper(v)),
    "shokri_naive": ("same, attacker with a miscalibrated threshold (FP32 shadows)",
                     lambda r, v: _shokri(r, v, True)),
    "eps": ("DP ε", lambda r, v: "–" if not (v.defense_info or {}).get("epsilon")
            else f"{v.defense_info['epsilon']:.2f}"),
}  # fmt: skip
ATTACK_LABELS = {"rmia_online": "online RMIA", "rmia": "RMIA offline", "lira_online": "LiRA online",
                 "lira_online_fixed_var": "LiRA online fixed var", "lira_offline_fixed_var": "LiRA offline fixed var",
                 "lira_offline": "LiRA offline", "shokri": "Shokri", "loss": "loss",
                 "label_only_correctness": "label-only"}  # fmt: skip


def _column(name: str) -> tuple[str, Cell]:
    if name in COLUMNS:
        return COLUMNS[name]
    if name.startswith("attack:"):
        attack = name.split(":", 1)[1]
        label = ATTACK_LABELS.get(attack, attack)
        return f"{label} AUC / TPR@1% / TPR@0.1%", lambda r, v: _attack_cells(v, attack)
    raise PrivquantError(
        f"table columns: unknown column {name!r}; choose from {sorted(COLUMNS)} or attack:NAME"
    )


class _Loader:
    """results.json files read once per rendering."""

    def __init__(self, root: Path) -> None:
        self.root, self.cache = root, {}

    def __call__(self, path: str) -> AuditResults:
        if path not in self.cache:
            self.cache[path] = AuditResults.load(self.root / path)
        return self.cache[path]


def _variant(results: AuditResults, name: str, where: str) -> VariantResult:
    if name not in results.variants:
        raise PrivquantError(
            f"{where}: variant {name!r} is not in the results ({sorted(results.variants)})"
        )
    return results.variants[name]


def _caption(results: list[AuditResults]) -> str:
    legacy = any(
        not next(iter(v.attacks.values())).pooled
        for r in results
        for v in r.variants.values()
        if v.attacks
    )
    if legacy:
        return ("*Generated from results.json. Legacy protocol (no canaries; means over the listed targets): a TPR "
                "interval is the range of the targets' own 95% bootstrap intervals; \"unresolved\": fewer than 10 "
                "expected false positives per target.*")  # fmt: skip
    return ("*Generated from results.json. TPR pooled over every target (each attacked with the others as "
            "references), worst case over attacks, exact 95% intervals; worst-case subset = canaries; "
            f"\"unresolved\": fewer than 10 expected false positives.{_counts(results)}*")  # fmt: skip


def _counts(results: list[AuditResults]) -> str:
    """What the pooled TPRs rest on: members and non-members scored in each subset, over how many
    targets (one phrase per distinct pool, named by its run, when a table mixes results files);
    a leading space to follow a caption's sentence, or "" when nothing is pooled."""
    phrases: dict[str, str] = {}  # phrase -> the run it was first read from
    for r in results:
        attacks = next((v.attacks for v in r.variants.values() if v.attacks), None)
        if not attacks:
            continue
        first = next(iter(attacks.values()))
        if not first.pooled:  # legacy results: per-target means, nothing pooled
            continue
        lead, pop = first.pooled[first.lead_subset()], first.pooled[first.population_subset()]
        phrase = f"population {pop.n_members:,} IN / {pop.n_nonmembers:,} OUT"
        if first.lead_subset() != first.population_subset():
            phrase = f"canaries {lead.n_members:,} IN / {lead.n_nonmembers:,} OUT, {phrase}"
        phrase += f", over {lead.n_targets} targets"
        phrases.setdefault(phrase, str(r.config.get("name", "?")))
    if len(phrases) > 1:
        return " Scores pooled: " + "; ".join(f"{run}: {ph}" for ph, run in phrases.items()) + "."
    return f" Scores pooled: {next(iter(phrases))}." if phrases else ""


def render_variants(spec: dict[str, Any], load: _Loader, where: str) -> list[str]:
    default = spec.get("results")
    columns = [_column(c) for c in spec.get("columns", [])]
    header = [spec.get("first", "variant"), *[c[0] for c in columns]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    used = []
    for row in spec.get("rows", []):
        if isinstance(row, dict) and "divider" in row:
            lines.append("| " + " | ".join([str(row["divider"]), *[""] * len(columns)]) + " |")
            continue
        if isinstance(row, str):
            row = {"variant": row, "label": row}
        if isinstance(row, list):
            if not 1 <= len(row) <= 2:  # an unquoted label with a comma splits into more items
                raise PrivquantError(
                    f"{where}: rows: expected [variant, label], got {row!r} (quote a label with commas)"
                )
            row = {"variant": row[0], "label": row[1] if len(row) > 1 else row[0]}
        if not isinstance(row, dict) or "variant" not in row:
            raise PrivquantError(
                f"{where}: rows: expected [variant, label] or {{variant, label, results}}, got {row!r}"
            )
        path = row.get("results", default)
        if path is None:
            raise PrivquantError(f"{where}: no results file for row {row!r}")
        results = load(path)
        used.append(results)
        v = _variant(results, row["variant"], where)
        cells = [str(row.get("label", row["variant"])), *[cell(results, v) for _, cell in columns]]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, "", _caption(used)]


def _ratio_bounds(ref: Leak, var: Leak) -> tuple[float, float, float]:
    """ref / var with the interval of the ratio from both intervals (inf where var reaches 0)."""
    point = ref.value / var.value if var.value > 0 else math.inf
    if ref.ci is None or var.ci is None:
        return point, point, point
    lo = ref.ci[0] / var.ci[1] if var.ci[1] > 0 else math.inf
    hi = ref.ci[1] / var.ci[0] if var.ci[0] > 0 else math.inf
    return point, lo, hi


def _fmt_ratio(x: float) -> str:
    return "∞" if math.isinf(x) else f"{x:.1f}x"


def render_claims(spec: dict[str, Any], load: _Loader, where: str) -> list[str]:
    """Targets judged by their intervals: ``reduction`` (FP32's TPR over the variant's at least
    ``factor``), ``less_than`` (the variant leaks less than ``reference``), ``matched_accuracy``
    (it leaks less than ``reference`` at matched accuracy, e.g. against a DP-SGD point) and
    ``accuracy`` (the variant within ``points`` of FP32's test accuracy)."""
    lines = ["| target | measured [95% interval] | met? |", "|---|---|---|"]
    used = []
    for claim in spec.get("claims", []):
        results = load(claim.get("results", spec.get("results")))
        used.append(results)
        v = _variant(results, claim["variant"], where)
        ref = _variant(results, claim.get("reference", "fp32"), where)
        kind = claim["kind"]
        if kind in ("reduction", "less_than"):
            subset, key = METRICS[claim["metric"]]
            a, b = _leak(ref, subset, key), _leak(v, subset, key)
            resolved = a.resolved and b.resolved and a.ci is not None and b.ci is not None
            if kind == "reduction":
                point, lo, hi = _ratio_bounds(a, b)
                factor = float(claim["factor"])
                status = (
                    "met"
                    if resolved and lo >= factor
                    else "missed"
                    if resolved and hi < factor
                    else "not resolved"
                )
                measured = f"{_fmt_ratio(point)} [{_fmt_ratio(lo)}, {_fmt_ratio(hi)}] ({a.text()} → {b.text()})"
            else:  # the variant leaks less than the reference variant, intervals apart
                status = ("met" if resolved and b.ci[1] < a.ci[0] else "missed" if resolved and b.ci[0] > a.ci[1]
                          else "not resolved")  # fmt: skip
                measured = f"{b.text()} vs {a.text()} ({claim.get('reference', 'fp32')})"
        elif kind == "matched_accuracy":
            measured, status = _matched_accuracy(v, ref, claim, where)
        elif kind == "shokri":
            measured = _shokri(results, v, bool(claim.get("naive")))
            status = "not resolved (one threshold-dependent operating point, no interval)"
        elif kind == "accuracy":
            diff, lo, hi, n_models = _accuracy_cost(v, ref)
            points = float(claim["points"]) / 100
            status = "met" if hi <= points else "missed" if lo > points else "not resolved"
            measured = f"{-100 * diff:+.2f} points [{-100 * hi:+.2f}, {-100 * lo:+.2f}] over {n_models} models"
        else:
            raise PrivquantError(
                f"{where}: claims: unknown kind {kind!r} "
                "(reduction, less_than, matched_accuracy, shokri, accuracy)"
            )
        lines.append(f"| {claim['text']} | {measured} | {status} |")
    accuracy = any(c["kind"] in ("accuracy", "matched_accuracy") for c in spec.get("claims", []))
    paired = f" Accuracy differences: {ACCURACY_INTERVAL}." if accuracy else ""
    return [
        *lines,
        "",
        f'*Generated from results.json: "met" only when the whole interval clears the line.{paired}{_counts(used)}*',
    ]


def _matched_accuracy(
    v: VariantResult, ref: VariantResult, claim: dict[str, Any], where: str
) -> tuple[str, str]:
    """Does ``v`` leak less than ``ref`` (e.g. a DP-SGD point) at matched accuracy?

    Aerni et al. compare defenses at equal utility: a defense that leaks less only because it is
    less accurate has not beaten the reference. So "met" needs ``v`` to leak less, intervals apart,
    while ``ref`` is not measurably more accurate (its accuracy lead's interval reaches 0 or below);
    "missed" is the mirror image (``ref`` leaks less and ``v`` is not measurably more accurate).
    Anything else, including a reference that is both less accurate and less leaky, is a different
    trade-off point, not a comparison at matched accuracy: "not resolved", with the reason."""
    if "reference" not in claim:
        raise PrivquantError(f"{where}: claims: matched_accuracy needs a reference variant")
    subset, key = METRICS[claim["metric"]]
    a, b = _leak(ref, subset, key), _leak(v, subset, key)
    lead, lo, hi, n_models = _accuracy_cost(v, ref)  # ref's accuracy minus v's
    name = claim["reference"]
    measured = (f"{b.text()} vs {a.text()} ({name}); {name}'s accuracy lead {100 * lead:+.2f} points "
                f"[{100 * lo:+.2f}, {100 * hi:+.2f}] over {n_models} models")  # fmt: skip
    if not (a.resolved and b.resolved and a.ci is not None and b.ci is not None):
        return measured, "not resolved (too few false positives)"
    if b.ci[1] < a.ci[0]:
        return (
            measured,
            "met" if lo <= 0 else f"not resolved ({name} is more accurate: no matched point)",
        )
    if a.ci[1] < b.ci[0]:
        return (
            measured,
            "missed" if hi >= 0 else f"not resolved ({name} is less accurate: no matched point)",
        )
    return measured, "not resolved (leakage intervals overlap)"


# How _accuracy_cost computes its interval, as the captions say it.
ACCURACY_INTERVAL = (
    "paired by model (same members, same test rows; Welch where not every model was scored), "
    "95% t interval"
)


def _accuracy_cost(v: VariantResult, ref: VariantResult) -> tuple[float, float, float, int]:
    """``ref``'s mean test accuracy minus ``v``'s, with a 95% t interval over the models.

    Model m of every variant in one audit trains on the same members with the same seed and is
    scored on the same test rows, so when both variants scored all their models the difference is
    paired model by model (what differs between member sets cancels). Otherwise Welch's interval.
    A t quantile, not 1.96: with 8 models the normal one would be too narrow."""
    accs = [m.test_accuracy for m in v.per_model if m.test_accuracy is not None]
    refs = [m.test_accuracy for m in ref.per_model if m.test_accuracy is not None]
    if len(accs) == len(refs) == len(v.per_model) == len(ref.per_model) and len(accs) > 1:
        d = [r - a for r, a in zip(refs, accs, strict=True)]
        diff, se, df = sum(d) / len(d), math.sqrt(_var(d) / len(d)), len(d) - 1.0
    else:
        va, vr = _var(accs) / len(accs), _var(refs) / len(refs)
        diff, se = (sum(refs) / len(refs)) - (sum(accs) / len(accs)), math.sqrt(va + vr)
        dfs = [(x, len(xs) - 1) for x, xs in ((va, accs), (vr, refs)) if len(xs) > 1]
        denominator = sum(x * x / k for x, k in dfs)
        df = (va + vr) ** 2 / denominator if denominator > 0 else 1.0  # Welch-Satterthwaite
    if se == 0:
        return diff, diff, diff, len(accs)
    q = float(student_t.ppf(0.975, df))
    return diff, diff - q * se, diff + q * se, len(accs)


def render_learning_curve(spec: dict[str, Any], load: _Loader, where: str) -> list[str]:
    """One row per audit size (``sizes``: ``{label, results}``): members per model, the accuracy
    cost of ``variant`` against ``reference`` and how much less it leaks, each with its interval;
    a size whose results do not hold the variant says so (``missing``: how)."""
    name, ref_name = spec["variant"], spec.get("reference", "fp32")
    label = spec.get("label", name)
    lines = [f"| size | members per model | {ref_name} test acc | {label} test acc | accuracy cost [95% CI] (models) "
             f"| canary TPR@1% FPR: {ref_name} → {label} (reduction [95% CI]) | population TPR@0.1% FPR: {ref_name} → "
             f"{label} (reduction [95% CI]) |", "|" + "---|" * 7]  # fmt: skip
    for size in spec.get("sizes", []):
        results = load(size["results"])
        ref = _variant(results, ref_name, where)
        members = results.split.get("members_per_model") or []
        span = (
            f"{sum(members) / len(members):,.0f} ({min(members):,}-{max(members):,})"
            if members
            else "–"
        )
        cells = [str(size.get("label", size["results"])), span, _pct(ref.test_accuracy)]
        v = results.variants.get(name)
        if v is None:
            cells += [str(size.get("missing", "not run")), "–", "–", "–"]
        else:
            diff, lo, hi, n_models = _accuracy_cost(v, ref)
            cells += [
                _pct(v.test_accuracy),
                f"{-100 * diff:+.2f} points [{-100 * hi:+.2f}, {-100 * lo:+.2f}] ({n_models})",
            ]
            for subset, key in (METRICS["worst1"], METRICS["pop01"]):
                a, b = _leak(ref, subset, key), _leak(v, subset, key)
                point, r_lo, r_hi = _ratio_bounds(a, b)
                cells.append(
                    f"{a.text()} → {b.text()} ({_fmt_ratio(point)} [{_fmt_ratio(r_lo)}, {_fmt_ratio(r_hi)}])"
                )
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, "", "*Generated from each size's results.json: accuracy cost = mean over models of the variant "
            f"minus the reference, {ACCURACY_INTERVAL}; TPR pooled over every target, worst case over attacks, exact "
            "95% intervals, and the interval of their ratio; \"unresolved\": fewer than 10 expected false positives.*"]  # fmt: skip


def _strength_leak(entry: dict[str, Any]) -> Leak:
    return Leak(
        entry["value"],
        (entry["ci"][0], entry["ci"][1]),
        "",
        entry["resolved"],
        entry["n_negatives"],
    )


def render_attack_strength(spec: dict[str, Any], root: Path, where: str) -> list[str]:
    """benchmarks/attack_strength.py's JSON: one row per variant x attack, one column per
    reference count (``subset``, ``key``), or (``ranking: true``) the variants ranked by their
    worst attack at each reference count."""
    import json

    path = root / spec["results"]
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise PrivquantError(f"{where}: cannot read {path} ({e})") from None
    subset, key = spec.get("subset", "canaries"), spec.get("key", TPR_1)
    refs = [str(r) for r in data["refs"]]
    variants = spec.get("variants", list(data["variants"]))
    if spec.get("ranking"):
        lines = ["| references | worst attack per variant (TPR [95% CI]) | ranking, most leaky first (≈: intervals overlap) | same as at "
                 f"{refs[-1]}? |", "|---|---|---|---|"]  # fmt: skip
        rankings = {}
        for r in refs:
            worst = {v: max(((a, _strength_leak(d[r][subset][key])) for a, d in data["variants"][v].items()),
                            key=lambda x: x[1].value) for v in variants}  # fmt: skip
            order = sorted(variants, key=lambda v: -worst[v][1].value)
            # Neighbours whose intervals overlap are not told apart: "a ≈ b", else "a > b".
            text = order[0]
            for hi, lo in zip(order, order[1:], strict=False):
                apart = worst[lo][1].ci[1] < worst[hi][1].ci[0]
                text += (" > " if apart else " ≈ ") + lo
            rankings[r] = text
            cells = "; ".join(f"{v}: {worst[v][1].text(1)} ({worst[v][0]})" for v in variants)
            lines.append(f"| {r} | {cells} | {text} | |")
        lines = [line.replace(" | |", f" | {'yes' if rankings[r] == rankings[refs[-1]] else 'no'} |")
                 if i >= 2 else line for i, (line, r) in enumerate(zip(lines, ["", "", *refs], strict=True))]  # fmt: skip
    else:
        lines = [
            "| variant | attack | " + " | ".join(f"{r} refs" for r in refs) + " |",
            "|" + "---|" * (2 + len(refs)),
        ]
        for v in variants:
            for attack, d in data["variants"][v].items():
                cells = [_strength_leak(d[r][subset][key]).text(1) for r in refs]
                lines.append(f"| {v} | {attack} | " + " | ".join(cells) + " |")
    n_neg = data["variants"][variants[0]][next(iter(data["variants"][variants[0]]))][refs[0]][
        subset
    ][key]["n_negatives"]
    return [*lines, "", f"*Generated from {spec['results']}: {key.replace('tpr@', 'TPR at ').replace('fpr', ' FPR')} on "
            f"the {subset}, pooled over {len(data['targets'])} targets ({n_neg:,} negatives), exact 95% intervals.*"]  # fmt: skip


STEP_LABELS = {"noise_multiplier": "σ", "augment_multiplicity": "K", "batch_size": "batch",
               "max_grad_norm": "clip", "reference_rows": "reference rows"}  # fmt: skip


def _step_label(step: dict[str, Any], fields: list[str]) -> str:
    return ", ".join(
        f"{STEP_LABELS.get(f, f.replace('_', ' '))} {step[f]}" for f in fields if f in step
    )


def render_tune(spec: dict[str, Any], root: Path, where: str) -> list[str]:
    """``privquant tune``'s tune.json: the undefended model, then every point of the sweep ranked by
    validation accuracy with its exact interval, its cost against the undefended model (with its
    interval paired on the same rows, where recorded) and, for DP-SGD, the privacy it spent.
    ``fields``: the step fields that name a point (default: those that differ between points)."""
    import json

    from privquant.metrics.epsilon import accuracy_interval

    path = root / spec["results"]
    try:
        data = json.loads(path.read_text())
        plain, points, n = (
            data["plain"],
            data.get("sweep", data["points"]),
            int(data["validation_rows"]),
        )
        int(data["members"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise PrivquantError(f"{where}: {path} is not a privquant tune.json ({e!r})") from None
    fields = spec.get("fields") or sorted(
        {
            f
            for p in points
            for f in p["step"]
            if len({json.dumps(q["step"].get(f)) for q in points}) > 1
        }
    )
    dp = any("epsilon" in (p.get("defense_info") or {}) for p in points)

    def acc(row: dict[str, Any]) -> str:
        a = row["validation_accuracy"]
        lo, hi = row.get("validation_ci") or accuracy_interval(a, n)
        return f"{100 * a:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"

    # A recipe's cost from an empty cache (reused sub-teachers counted) where every point
    # recorded it; else each point's time as run (tune.json files from before it was recorded).
    scratch = all(p.get("recipe_seconds") is not None for p in points)
    paired = all(p.get("accuracy_cost_ci") is not None for p in points)
    head = [
        "point",
        "validation accuracy [95% CI]",
        "vs no defense (points) [paired 95% CI]" if paired else "vs no defense (points)",
        "training time from scratch (vs no defense)"
        if scratch
        else "training time (vs no defense)",
    ]
    if dp:
        head += ["ε spent (δ)", "noise multiplier", "steps"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    cells = ["no defense", acc(plain), "–", f"{plain['seconds']:,.0f} s"] + (
        ["–"] * 3 if dp else []
    )
    lines.append("| " + " | ".join(cells) + " |")
    for p in points:
        info = p.get("defense_info") or {}
        cost = 100 * (p["validation_accuracy"] - plain["validation_accuracy"])
        seconds = p["recipe_seconds"] if scratch else p["seconds"]
        vs_plain = f"{cost:+.1f}"
        if paired:  # the interval of plain - point, turned into point - plain
            lo, hi = p["accuracy_cost_ci"]
            vs_plain += f" [{-100 * hi:+.1f}, {-100 * lo:+.1f}]"
        cells = [_step_label(p["step"], fields) or p["step"]["method"], acc(p), vs_plain,
                 f"{seconds:,.0f} s ({seconds / plain['seconds']:.1f}x)"]  # fmt: skip
        if dp:
            cells += ["–", "–", "–"] if "epsilon" not in info else [
                f"{info['epsilon']:.3g} ({info['delta']:.1e})", f"{info['noise_multiplier']:.3g}",
                f"{info['steps']:,.0f}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    fixed = {k: v for k, v in (points[0]["step"] if points else {}).items()
             if k not in fields and all(q["step"].get(k) == v for q in points)}  # fmt: skip
    return [*lines, "", f"*Generated from {spec['results']}: one model per point (population model "
            f"{data.get('model_index', 0)}, {int(data['members']):,} members), each scored on {n:,} validation rows "
            f"drawn from the defender's reference rows (no model trains on them; membership is never read), exact "
            f"95% intervals; every point: {json.dumps(fixed)}.*"]  # fmt: skip


def _var(xs: list[float]) -> float:
    if len(xs) < 2:
        return 0.0
    mean = sum(xs) / len(xs)
    return sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)


def render_block(spec_text: str, root: Path, where: str, load: _Loader | None = None) -> str:
    try:
        spec = yaml.safe_load(spec_text) or {}
    except yaml.YAMLError as e:
        raise PrivquantError(f"{where}: table spec is not valid YAML ({e})") from None
    load = load or _Loader(root)
    kind = spec.get("kind", "variants")
    if kind == "claims":
        lines = render_claims(spec, load, where)
    elif kind == "attack_strength":
        lines = render_attack_strength(spec, root, where)
    elif kind == "tune":
        lines = render_tune(spec, root, where)
    elif kind == "learning_curve":
        lines = render_learning_curve(spec, load, where)
    else:
        lines = render_variants(spec, load, where)
    return "\n".join(lines) + "\n"


def render_file(path: Path, root: Path) -> tuple[str, str]:
    """The file's text and the text with every table block regenerated."""
    text = path.read_text()
    load = _Loader(root)

    def fill(m: re.Match[str]) -> str:
        line = text[: m.start()].count("\n") + 1
        return m.group(1) + render_block(m.group("spec"), root, f"{path}:{line}", load) + m.group(4)

    return text, BLOCK.sub(fill, text)


def check_files(paths: list[Path], root: Path) -> list[Path]:
    """The files whose generated tables differ from what their results.json give."""
    stale = []
    for p in paths:
        old, new = render_file(p, root)
        if old != new:
            stale.append(p)
    return stale
