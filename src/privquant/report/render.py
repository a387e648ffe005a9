"""Markdown and self-contained HTML reports, rendered from the typed results alone."""

from __future__ import annotations

import base64
import html
import os
import re
from pathlib import Path

from privquant.artifacts.atomic import atomic_write_bytes
from privquant.metrics import AUC, TPR_001, TPR_01, TPR_1, relative_change
from privquant.report import plots
from privquant.results import (
    AttackResult,
    AuditResults,
    TradeoffPoint,
    VariantResult,
    tradeoff_points,
)
from privquant.results.pareto import Leak, attack_leak

COLUMNS = [(AUC, "AUC"), (TPR_1, "TPR@1%"), (TPR_01, "TPR@0.1%"), (TPR_001, "TPR@0.01%"),
           ("accuracy", "acc"), ("precision", "prec"), ("recall", "recall"), ("f1", "F1"), ("advantage", "adv"),
           ("epsilon_lower_bound", "ε ≥")]  # fmt: skip
NAIVE_LABEL = "attacker with a miscalibrated threshold (FP32 shadows)"
SUBSET_NAMES = {"canaries": "canaries", "rest": "population (non-canary)", "all": "all pool points"}
THRESHOLD_NOTE = (
    "Accuracy, precision, recall and F1 are read at one operating point: the shadow-chosen threshold "
    "of best balanced accuracy (the Shokri classifier cuts its probability at 0.5). They move with "
    "where the attacker puts that threshold, so Famili & Lao's relative reductions of them are "
    "threshold-dependent; AUC, advantage and TPR at fixed FPR beside them are not."
)


def _fmt(entry: AttackResult, key: str, multi: bool) -> str:
    if key not in entry.mean:  # results written before this metric existed
        return "–"
    m = entry.mean[key]
    cis = [r["ci"][key] for r in entry.per_target.values() if key in r.get("ci", {})]
    text = f"{m:.3f}"
    if multi:
        text += f" ± {entry.std[key]:.3f}"
        if key.startswith("tpr@") and cis:  # the range of the targets' own bootstrap intervals
            text += f" [{min(c[0] for c in cis):.3f}, {max(c[1] for c in cis):.3f}]"
    elif cis:
        text += f" [{cis[0][0]:.3f}, {cis[0][1]:.3f}]"
    return text


def _pooled_auc(entry: AttackResult, subset: str) -> str:
    p = entry.pooled.get(subset)
    if p is None or p.auc is None:
        return "–"
    return f"{p.auc:.3f}" + (f" [{p.auc_ci[0]:.3f}, {p.auc_ci[1]:.3f}]" if p.auc_ci else "")


def _pooled_tpr(entry: AttackResult, subset: str, key: str) -> str:
    p = entry.pooled.get(subset)
    if p is None or key not in p.tpr:
        return "–"
    return attack_leak(entry, subset, key, "").text(2 if key != TPR_1 else 1)


def _rel(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:+.1f}%"


def _acc(v: float | None) -> str:
    return "–" if v is None else f"{v:.4f}"


def _settings(name: str, v: VariantResult) -> list[tuple[str, dict[str, AttackResult]]]:
    settings = [(name, v.attacks)]
    if v.attacks_naive_fp32_shadows is not None:  # labelled: never read as a privacy gain
        settings.append((f"{name} ({NAIVE_LABEL})", v.attacks_naive_fp32_shadows))
    return settings


def pooled_rows(results: AuditResults) -> tuple[list[str], list[list[str]]]:
    """Every attack on every variant, pooled over targets, per subset, with intervals."""
    first = next(iter(results.variants["fp32"].attacks.values()), None)
    subsets = list(first.pooled) if first is not None else []
    header = ["variant", "attack", "subset", "AUC [95% CI]", "TPR@1% [95% CI]", "TPR@0.1% [95% CI]",
              "negatives"]  # fmt: skip
    rows = []
    for name, v in results.variants.items():
        for label, attacks in _settings(name, v):
            for attack, entry in attacks.items():
                for subset in subsets:
                    p = entry.pooled.get(subset)
                    if p is None:
                        continue
                    rows.append([label, attack, SUBSET_NAMES.get(subset, subset), _pooled_auc(entry, subset),
                                 _pooled_tpr(entry, subset, TPR_1), _pooled_tpr(entry, subset, TPR_01),
                                 f"{p.n_nonmembers:,}"])  # fmt: skip
    return header, rows


def metrics_rows(results: AuditResults) -> tuple[list[str], list[list[str]]]:
    multi = len(results.targets) > 1
    header = ["variant", "steps", "bits", "bytes", "test acc", "attack", *[c[1] for c in COLUMNS],
              "Δacc / ΔTPR / ΔF1 vs FP32 (threshold-dependent)"]  # fmt: skip
    rows = []
    fp = results.variants["fp32"].attacks if "fp32" in results.variants else {}
    for name, v in results.variants.items():
        for label, attacks in _settings(name, v):
            for attack, entry in attacks.items():
                rel = [relative_change(fp[attack].mean[k], entry.mean[k]) if attack in fp else None
                       for k in ("accuracy", "recall", "f1")]  # fmt: skip
                rows.append([label, v.description, f"{v.bits:.2f}", str(v.size_bytes), _acc(v.test_accuracy), attack,
                             *[_fmt(entry, k, multi) for k, _ in COLUMNS], " / ".join(_rel(r) for r in rel)])  # fmt: skip
    return header, rows


PARETO_TITLE = "Privacy / utility / size"
PARETO_FIGURE = "figures/pareto.png"


def _frontiers(p: TradeoffPoint) -> str:
    marks = [
        m
        for m, on in (("@1%", p.frontier_1), ("@0.1%", p.frontier_01), ("+size", p.frontier_1_size))
        if on
    ]
    return ", ".join(marks) or "–"


def tradeoff_rows(results: AuditResults) -> tuple[list[str], list[list[str]]]:
    """The Pareto table: every variant's accuracy, worst-case and population leakage (pooled over
    targets, with intervals), size and DP epsilon."""
    headline = results.headline_attack()
    paper = "shokri" if "shokri" in results.attack_names else None
    points = sorted(tradeoff_points(results), key=lambda p: -p.test_accuracy)
    lead = SUBSET_NAMES.get(points[0].lead_subset, "") if points else ""

    def rests(leak: Leak | None) -> str:  # how many negatives a level rests on
        return (
            "" if leak is None or leak.n_negatives is None else f"; {leak.n_negatives:,} negatives"
        )

    first = points[0] if points else None
    header = ["variant", "steps", "test acc",
              f"worst TPR@1%, {lead} [95% CI] (attack{rests(first and first.worst_1)})",
              f"worst TPR@0.1%, {lead} [95% CI]", f"population TPR@1% [95% CI] ({rests(first and first.population_1)[2:]})",
              f"population TPR@0.1% [95% CI] (attack{rests(first and first.population_01)})", f"{headline} AUC",
              "bytes", "bits", "DP ε", "on frontier"]  # fmt: skip
    if paper:
        header.append("Shokri Δacc / ΔTPR / ΔF1 (threshold-dependent)")
    rows = []
    for p in points:
        v = results.variants[p.variant]
        auc = "–"
        if headline in v.attacks:
            e = v.attacks[headline]
            auc = (
                _pooled_auc(e, e.lead_subset())
                if e.pooled
                else _fmt(e, AUC, len(results.targets) > 1)
            )
        row = [p.variant, p.description, f"{p.test_accuracy:.4f}", f"{p.worst_1.text()} ({p.worst_1.attack})",
               p.worst_01.text(2), p.population_1.text(), f"{p.population_01.text(2)} ({p.population_01.attack})",
               auc, f"{p.size_bytes:,}", f"{p.bits:.2f}", "–" if p.epsilon is None else f"{p.epsilon:.2f}",
               _frontiers(p)]  # fmt: skip
        if paper:
            rel = v.relative_change_vs_fp32.get(paper) or {}
            row.append(
                " / ".join(_rel(rel.get(k)) for k in ("accuracy", "recall", "f1")) if rel else "–"
            )
        rows.append(row)
    return header, rows


def _size_note(size: int, fp32: int) -> str:
    ratio = fp32 / max(1, size)
    return f"{size:,} bytes, " + (
        "the size of FP32" if ratio < 1.05 else f"{ratio:.1f}x smaller than FP32"
    )


def _headline_leaks(p: TradeoffPoint) -> list[Leak]:
    """What a verdict may use: worst-case TPR at 1% FPR and population TPR at 0.1% FPR (1% where
    0.1% is unresolved), only where the level rests on enough negatives."""
    population = p.population_01 if p.population_01.resolved else p.population_1
    return [leak for leak in (p.worst_1, population) if leak.resolved]


def clearly_below(variant: Leak, reference: Leak, factor: float) -> bool:
    """``variant`` leaks at most ``factor`` times ``reference``, the interval included: the
    upper bound of its interval is below ``factor`` x the reference's value."""
    upper = variant.ci[1] if variant.ci is not None else variant.value
    return upper <= factor * reference.value


def verdict(results: AuditResults, tolerance: float = 0.01, min_gain: float = 0.8) -> list[str]:
    """Sentences that answer "which variant should I ship, and how much does it leak?",
    generated from the numbers: worst case over attacks, pooled over every target, worst-case
    points (canaries) first.

    A variant counts as leaking less only when, on every resolved headline level, the upper end
    of its interval is at most ``min_gain`` times FP32's value. A level with fewer than 10
    expected false positives is never used. Variants below half of FP32's accuracy are named
    as collapsed, not as the least leaky.
    """
    points = {p.variant: p for p in tradeoff_points(results)}
    fp = points.get("fp32")
    if fp is None:
        return []
    lead = SUBSET_NAMES.get(fp.lead_subset, fp.lead_subset)

    rest = "non-canary points" if fp.lead_subset == "canaries" else "all points"

    def leak(p: TradeoffPoint) -> str:
        population = (f"{p.population_01.text(2)} at 0.1% FPR" if p.population_01.resolved
                      else f"{p.population_1.text()} at 1% FPR")  # fmt: skip
        if fp.lead_subset != "canaries" and not p.population_01.resolved:
            return f"TPR {p.worst_1.text()} at 1% FPR"
        return f"TPR {p.worst_1.text()} at 1% FPR on the {lead}; {population} on the {rest}"

    def less(p: TradeoffPoint) -> bool:
        pairs = [(a, b) for a, b in zip(_headline_leaks(p), _headline_leaks(fp), strict=False)]
        return (
            bool(pairs)
            and len(_headline_leaks(p)) == len(_headline_leaks(fp))
            and all(clearly_below(a, b, min_gain) for a, b in pairs)
        )

    def ratio(p: TradeoffPoint) -> float:
        return max((a.value / max(b.value, 1e-9) for a, b in zip(_headline_leaks(p), _headline_leaks(fp),
                                                                  strict=False)), default=1.0)  # fmt: skip

    how = "pooled over" if fp.worst_1.ci is not None else "mean over"
    warned = [f"**Warning:** {w}." for w in (results.warnings or results.degenerate_warnings())]
    lines = [*warned,f"**Worst case ({lead}, {how} {len(results.targets)} targets): FP32 leaks {leak(fp)}** "
             f"(worst of {len(results.attack_names)} attacks" + ("; 95% intervals)." if how == "pooled over" else ").")]  # fmt: skip
    unresolved = [name for name, leak_ in (("worst-case TPR at 1% FPR", fp.worst_1),
                                           ("population TPR at 0.1% FPR", fp.population_01)) if not leak_.resolved]  # fmt: skip
    if unresolved:
        lines.append(f"Not resolved (fewer than 10 expected false positives, not used by this verdict): "
                     f"{', '.join(unresolved)}.")  # fmt: skip
    if len(points) < 2:  # nothing to compare: the worst case is the verdict
        return lines
    if not _headline_leaks(fp):
        lines.append("**Not resolved**: no headline level rests on enough negatives to compare variants; "
                     "plant more canaries or train more models.")  # fmt: skip
        return lines
    within = [
        p for p in points.values() if p.test_accuracy >= fp.test_accuracy - tolerance and less(p)
    ]
    if not within:
        lines.append(f"**No variant within {100 * tolerance:g} point of FP32's test accuracy leaks measurably "
                     f"less than FP32** (the upper end of its interval at most {100 * min_gain:g}% of FP32's "
                     f"value; FP32: {100 * fp.test_accuracy:.2f}% accuracy).")  # fmt: skip
        safest = fp
    else:
        safest = min(within, key=lambda p: (ratio(p), p.size_bytes))
        lines.append(f"**Ship `{safest.variant}`** ({safest.description}): the least leaky variant within "
                     f"{100 * tolerance:g} point of FP32's test accuracy — {100 * safest.test_accuracy:.2f}% vs "
                     f"{100 * fp.test_accuracy:.2f}%; {leak(safest)}; "
                     f"{_size_note(safest.size_bytes, fp.size_bytes)}.")  # fmt: skip
    usable = [p for p in points.values() if p.test_accuracy >= fp.test_accuracy / 2]
    leaking_less = [p for p in usable if less(p)]
    if leaking_less:
        lowest = min(leaking_less, key=lambda p: (ratio(p), -p.test_accuracy))
        if lowest.variant != safest.variant:
            lines.append(f"Least leakage overall: `{lowest.variant}` ({lowest.description}); {leak(lowest)}; at "
                         f"{100 * (fp.test_accuracy - lowest.test_accuracy):.1f} points of test accuracy below FP32.")  # fmt: skip
    collapsed = sorted(p.variant for p in points.values() if p not in usable)
    if collapsed:
        names = ", ".join(f"`{v}`" for v in collapsed)
        lines.append(f"Collapsed (below half of FP32's test accuracy; their low leakage is not a defense): {names}.")  # fmt: skip
    return lines


def tradeoff_lines(results: AuditResults) -> list[str]:
    header, rows = tradeoff_rows(results)
    if not rows:
        return []
    return [f"## {PARETO_TITLE}", "",
            "Leakage is each variant's worst case over the audited attacks, read on ROC curves pooled over every "
            "target (each target attacked with the other models as references), with exact 95% intervals. "
            "\"unresolved\": the level rests on fewer than 10 expected false positives and is noise. A variant is "
            "on a frontier when no other variant is at least as good on every axis and better on one: `@1%`: test "
            "accuracy and worst-case TPR at 1% FPR; `@0.1%`: test accuracy and population TPR at 0.1% FPR; "
            "`+size`: test accuracy, worst-case TPR at 1% FPR and bytes.", "",
            f"![{PARETO_TITLE}]({PARETO_FIGURE})", "",
            "| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(r) + " |" for r in rows], "", THRESHOLD_NOTE, ""]  # fmt: skip


def _setting(results: AuditResults) -> str:
    cfg, split = results.config, results.split
    targets = ("every model a target in turn" if cfg.get("targets") == "all"
               else f"targets {cfg.get('targets')}")  # fmt: skip
    canaries = ""
    if split.get("canaries"):
        canaries = (f", {split['canaries']} {split.get('canary_kind', '')} canaries planted in the pool with the "
                    "same coin-flip membership")  # fmt: skip
    return (f"Dataset **{results.dataset['name']}**, model **{cfg['model']['name']}**, {split['n_models']} models on "
            f"random halves of a pool of {split['pool_size']} points{canaries}, {targets}, seed {cfg['seed']}.")  # fmt: skip


def findings_lines(results: AuditResults) -> list[str]:
    f = results.findings
    if f is None:
        return []
    lines = [f"## Most vulnerable points ({f.attack} on {f.variant}, target {f.target})", "",
             "The points this attack is surest are members, highest score first. Empirical epsilon lower bounds "
             "(column ε ≥) come from TPR/FPR at thresholds chosen on shadows, with 95% Clopper-Pearson limits.", ""]  # fmt: skip
    if f.image:
        lines += [f"![most vulnerable points]({f.image})", ""]
    lines += [
        "| rank | pool index | dataset row | label | member | score |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {i + 1} | {p['pool_index']} | {p['dataset_row']} | {p['label']} | {'yes' if p['member'] else 'no'} "
              f"| {p['score']:.4g} |" for i, p in enumerate(f.points)]  # fmt: skip
    return [*lines, ""]


def pooled_lines(results: AuditResults) -> list[str]:
    header, rows = pooled_rows(results)
    if not rows:
        return []
    return ["## Every attack, pooled over targets, per subset", "",
            "<details><summary>AUC with a 95% bootstrap interval; TPR at 1% / 0.1% FPR with exact 95% intervals "
            "(\"unresolved\": fewer than 10 expected false positives); negatives: the non-member (target, point) "
            "pairs each level rests on</summary>", "",
            "| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(r) + " |" for r in rows], "", "</details>", ""]  # fmt: skip


def render_markdown(results: AuditResults, figures: dict[str, str]) -> str:
    header, rows = metrics_rows(results)
    sha = results.dataset.get("sha256")
    lines = [
        f"# privquant audit: {results.config['name']}",
        "",
        *[f"> {s}" + "  " for s in verdict(results)],
        "",
        _setting(results) + (f" Dataset sha256 `{sha[:16]}…`." if sha else ""),
        "Every variant is applied to the target **and** to the shadow models (adaptive attacker). Decision "
        "thresholds come from shadow models only. Relative change is (FP32 − variant) / FP32, as Famili & Lao "
        f'report it: positive means less leakage. Rows marked "{NAIVE_LABEL}" are a weaker attacker, never '
        "a privacy gain.",
        "",
        *tradeoff_lines(results),
        *pooled_lines(results),
        "## Every attack on every variant, per target",
        "",
        "<details><summary>All pool points: means over targets (± std; for TPR also the range of the targets' "
        "95% bootstrap intervals), or a 95% bootstrap CI for one target</summary>",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *["| " + " | ".join(r) + " |" for r in rows],
        "",
        "</details>",
        "",
    ]
    for title, fname in figures.items():
        lines += [f"## {title}", "", f"![{title}]({fname})", ""]
    lines += findings_lines(results)
    t = results.timings_seconds
    parts = ", ".join(f"{k.replace('_', ' ')} {v:.0f} s" for k, v in t.items() if k != "total")
    lines += [f"Wall time: {t.get('total', 0):.0f} s ({parts}). Machine: {results.machine}.", ""]
    return "\n".join(lines)


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    out = "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"
    for r in rows:
        out += "<tr>" + "".join(f"<td>{html.escape(c.replace('**', ''))}</td>" for c in r) + "</tr>"
    return out + "</table>"


def _inline(text: str) -> str:
    """The few markdown marks the generated sentences use, as HTML (after escaping)."""
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def _img(title: str, png: bytes) -> str:
    data = base64.b64encode(png).decode()
    return f"<img alt='{html.escape(title)}' src='data:image/png;base64,{data}'>"


STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1500px;padding:0 1em;color:#222}
h1{font-size:1.6em;margin:0.2em 0}h2{font-size:1.2em;margin-top:1.4em}
.verdict{background:#eef6ee;border-left:5px solid #2a7a2a;padding:0.6em 1em;font-size:1.05em}
.verdict p{margin:0.35em 0}.setting{color:#555;font-size:0.9em}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right;white-space:nowrap}
td:nth-child(1),td:nth-child(2),th:nth-child(1),th:nth-child(2){text-align:left}th{background:#f3f3f3}
.pareto{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1.2fr);gap:1em;align-items:start}
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:0.8em}
img{max-width:100%;height:auto}details{margin:1em 0}summary{cursor:pointer;font-weight:600}
@media (max-width:1500px){.pareto{grid-template-columns:1fr}.pareto img{max-width:1100px;width:100%}}
@media (max-width:900px){.plots{grid-template-columns:1fr}body{margin:0.8em auto}}"""


def render_html(
    results: AuditResults,
    pareto_png: bytes,
    pngs: dict[str, bytes],
    vulnerable_png: bytes | None = None,
) -> str:
    """The report a person reads in 30 seconds: the verdict and the privacy-utility-size view
    on the first screen, every number below it."""
    name = html.escape(results.config["name"])
    sentences = "".join(f"<p>{_inline(s)}</p>" for s in verdict(results))
    verdict_box = f"<div class='verdict'>{sentences}</div>" if sentences else ""
    pareto = (f"<div class='pareto'><div>{_img(PARETO_TITLE, pareto_png)}</div>"
              f"<div class='scroll'>{_html_table(*tradeoff_rows(results))}</div></div>")  # fmt: skip
    full = ("<details><summary>Every attack, pooled over targets, per subset (95% intervals)</summary>"
            f"<div class='scroll'>{_html_table(*pooled_rows(results))}</div></details>"
            "<details><summary>Every attack on every variant, per target (all pool points; ± std over targets)</summary>"
            f"<div class='scroll'>{_html_table(*metrics_rows(results))}</div></details>")  # fmt: skip
    rocs = {t: b for t, b in pngs.items() if t.startswith("ROC")}
    wide = {t: b for t, b in pngs.items() if t not in rocs}  # histograms: one panel per variant
    figs = "".join(f"<figure>{_img(t, b)}</figure>" for t, b in rocs.items())
    figs_wide = "".join(
        f"<h2>{html.escape(t)}</h2><div class='scroll'>{_img(t, b)}</div>" for t, b in wide.items()
    )
    findings = ""
    f = results.findings
    if f is not None:
        findings = (f"<h2>Most vulnerable points ({html.escape(f.attack)} on {html.escape(f.variant)}, target "
                    f"{f.target})</h2><p>Highest membership scores first (red: a true member).</p>")  # fmt: skip
        if f.image and vulnerable_png is not None:
            findings += _img("most vulnerable points", vulnerable_png)
    setting = _inline(_setting(results))
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>privquant audit: {name}</title>
<style>{STYLE}</style></head><body>
<h1>privquant audit: {name}</h1>
{verdict_box}
<p class="setting">{setting} Each variant is applied to the target and to every shadow (adaptive attacker);
thresholds come from shadows only. Leakage is the worst case over the audited attacks, pooled over
every target, with 95% intervals. {html.escape(THRESHOLD_NOTE)}</p>
<h2>{PARETO_TITLE}</h2>
{pareto}
{full}
<h2>Attacks in detail</h2><div class="plots">{figs}</div>
{figs_wide}
{findings}
<p class="setting">Wall time {results.timings_seconds.get("total", 0):.0f} s. privquant {html.escape(results.privquant_version)}.</p>
</body></html>"""


def render_report(
    results: AuditResults | str | os.PathLike[str], run_dir: str | os.PathLike[str] | None = None
) -> Path:
    """Write report.md, report.html and the figures into ``run_dir``; return the HTML path.

    ``results`` is the typed object or the path of a results.json (or of its run folder).
    """
    if not isinstance(results, AuditResults):
        path = Path(results)
        run_dir = run_dir or (path if path.is_dir() else path.parent)
        results = AuditResults.load(path)
    run_dir = Path(run_dir or ".")
    if "fp32" not in results.variants:
        from privquant.errors import PrivquantError

        raise PrivquantError(f"results: the report compares every variant with 'fp32', and these results have "
                             f"only {sorted(results.variants)}; audit an fp32 variant beside them")  # fmt: skip
    headline = results.headline_attack()
    pngs = {f"ROC (log-log): {a}": plots.roc_figure(results, a) for a in results.attack_names}
    pngs[f"Score histograms: {headline}"] = plots.histogram_figure(results, headline)
    pareto_png = plots.pareto_figure(results)
    figures = {}
    for i, (title, data) in enumerate(pngs.items()):
        fname = f"figures/fig{i:02d}.png"
        atomic_write_bytes(run_dir / fname, data)
        figures[title] = fname
    atomic_write_bytes(run_dir / PARETO_FIGURE, pareto_png)
    atomic_write_bytes(run_dir / "report.md", render_markdown(results, figures).encode())
    f = results.findings
    image = run_dir / f.image if f is not None and f.image else None
    vulnerable = image.read_bytes() if image is not None and image.is_file() else None
    html_text = render_html(results, pareto_png, pngs, vulnerable)
    atomic_write_bytes(run_dir / "report.html", html_text.encode())
    return run_dir / "report.html"
