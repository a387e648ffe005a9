"""Markdown and self-contained HTML reports, rendered from the typed results alone."""

from __future__ import annotations

import base64
import html
import os
import re
from pathlib import Path

from privquant.artifacts.atomic import atomic_write_bytes
from privquant.metrics import relative_change
from privquant.report import plots
from privquant.results import AttackResult, AuditResults, TradeoffPoint, tradeoff_points

COLUMNS = [("auc", "AUC"), ("tpr@1%fpr", "TPR@1%"), ("tpr@0.1%fpr", "TPR@0.1%"), ("tpr@0.01%fpr", "TPR@0.01%"),
           ("accuracy", "acc"), ("precision", "prec"), ("recall", "recall"), ("f1", "F1"), ("advantage", "adv"),
           ("epsilon_lower_bound", "ε ≥")]  # fmt: skip


def _fmt(entry: AttackResult, key: str, multi: bool) -> str:
    if key not in entry.mean:  # results written before this metric existed
        return "–"
    m = entry.mean[key]
    ci = next(iter(entry.per_target.values())).get("ci", {}).get(key)
    text = f"{m:.3f}"
    if multi:
        text += f" ± {entry.std[key]:.3f}"
    elif ci:
        text += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
    return text


def _rel(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:+.1f}%"


def _acc(v: float | None) -> str:
    return "–" if v is None else f"{v:.4f}"


def metrics_rows(results: AuditResults) -> tuple[list[str], list[list[str]]]:
    multi = len(results.config["targets"]) > 1
    header = ["variant", "steps", "bits", "bytes", "test acc", "attack", *[c[1] for c in COLUMNS],
              "Δacc / ΔTPR / ΔF1 vs FP32"]  # fmt: skip
    rows = []
    fp = results.variants["fp32"].attacks if "fp32" in results.variants else {}
    for name, v in results.variants.items():
        settings = [(name, v.attacks)]
        if v.attacks_naive_fp32_shadows is not None:  # labelled: the weaker, non-adaptive attacker
            settings.append((f"{name} (naive: FP32 shadows)", v.attacks_naive_fp32_shadows))
        for label, attacks in settings:
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
    """The Pareto table: every variant's accuracy, worst-case leakage, size and DP epsilon."""
    headline = results.headline_attack()
    multi = len(results.config["targets"]) > 1
    paper = "shokri" if "shokri" in results.attack_names else None
    header = ["variant", "steps", "test acc", "worst TPR@1% (attack)", "worst TPR@0.1% (attack)",
              f"{headline} AUC", "bytes", "bits", "DP ε", "on frontier"]  # fmt: skip
    if paper:
        header.append("Shokri Δacc / ΔTPR / ΔF1")
    rows = []
    for p in sorted(tradeoff_points(results), key=lambda p: -p.test_accuracy):
        v = results.variants[p.variant]
        auc = _fmt(v.attacks[headline], "auc", multi) if headline in v.attacks else "–"
        row = [p.variant, p.description, f"{p.test_accuracy:.4f}", f"{100 * p.tpr_1:.2f}% ({p.tpr_1_attack})",
               f"{100 * p.tpr_01:.2f}% ({p.tpr_01_attack})", auc, f"{p.size_bytes:,}", f"{p.bits:.2f}",
               "–" if p.epsilon is None else f"{p.epsilon:.2f}", _frontiers(p)]  # fmt: skip
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


def verdict(results: AuditResults, tolerance: float = 0.01, min_gain: float = 0.8) -> list[str]:
    """Sentences that answer "which variant should I ship, and how much does it leak?",
    generated from the numbers (worst case over attacks, means over targets).

    A variant counts as leaking less only when both worst-case TPRs are at most ``min_gain``
    times FP32's: a 1% difference at 0.1% FPR is a point or two of the population. Variants
    below half of FP32's accuracy are named as collapsed, not as the least leaky.
    """
    points = {p.variant: p for p in tradeoff_points(results)}
    fp = points.get("fp32")
    if fp is None or len(points) < 2:
        return []

    def leak(p: TradeoffPoint) -> str:
        return (
            f"worst-case TPR {100 * p.tpr_1:.1f}% at 1% FPR and {100 * p.tpr_01:.2f}% at 0.1% FPR"
        )

    def ratio(p: TradeoffPoint) -> float:  # the worse of the two TPRs, relative to FP32's
        return max(p.tpr_1 / max(fp.tpr_1, 1e-9), p.tpr_01 / max(fp.tpr_01, 1e-9))

    within = [p for p in points.values() if p.test_accuracy >= fp.test_accuracy - tolerance]
    safest = min(within, key=lambda p: (ratio(p), p.size_bytes))
    lines = []
    if safest.variant == "fp32" or ratio(safest) > min_gain:
        lines.append(f"**No variant within {100 * tolerance:g} point of FP32's test accuracy leaks meaningfully "
                     f"less than FP32** (both worst-case TPRs at most {100 * min_gain:g}% of FP32's; FP32: "
                     f"{100 * fp.test_accuracy:.2f}% accuracy, {leak(fp)}).")  # fmt: skip
        safest = fp
    else:
        lines.append(f"**Ship `{safest.variant}`** ({safest.description}): the least leaky variant within "
                     f"{100 * tolerance:g} point of FP32's test accuracy — {100 * safest.test_accuracy:.2f}% vs "
                     f"{100 * fp.test_accuracy:.2f}%, {leak(safest)} (FP32: {100 * fp.tpr_1:.1f}% and "
                     f"{100 * fp.tpr_01:.2f}%), {_size_note(safest.size_bytes, fp.size_bytes)}.")  # fmt: skip
    usable = [p for p in points.values() if p.test_accuracy >= fp.test_accuracy / 2]
    lowest = min(usable, key=lambda p: (ratio(p), -p.test_accuracy))
    if lowest.variant != safest.variant:
        lines.append(f"Least leakage overall: `{lowest.variant}` ({lowest.description}), {leak(lowest)}, at "
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
            "Leakage is each variant's worst case over the audited attacks (mean over targets). A variant is on a "
            "frontier when no other variant is at least as good on every axis and better on one: `@1%`: test "
            "accuracy and TPR at 1% FPR; `@0.1%`: test accuracy and TPR at 0.1% FPR; `+size`: test accuracy, TPR "
            "at 1% FPR and bytes. "
            "With few targets, and 0.1% FPR resting on a handful of points, small differences are within "
            "noise: the per-attack table below gives ± std.", "",
            f"![{PARETO_TITLE}]({PARETO_FIGURE})", "",
            "| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(r) + " |" for r in rows], ""]  # fmt: skip


def _setting(results: AuditResults) -> str:
    cfg, split = results.config, results.split
    return (f"Dataset **{results.dataset['name']}**, model **{cfg['model']['name']}**, {split['n_models']} models on "
            f"random halves of a pool of {split['pool_size']} points, targets {cfg['targets']}, seed {cfg['seed']}.")  # fmt: skip


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
        "thresholds come from shadow models only. Values are means over targets (± std), or with a 95% "
        "bootstrap CI for one target. Relative change is (FP32 − variant) / FP32, as Famili & Lao report it: "
        "positive means less leakage.",
        "",
        *tradeoff_lines(results),
        "## Every attack on every variant",
        "",
        "<details><summary>The full table: every attack, every metric, 95% CIs or ± std over targets</summary>",
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
    full = ("<details><summary>Every attack on every variant (full table, 95% CIs or ± std over targets)</summary>"
            f"<div class='scroll'>{_html_table(*metrics_rows(results))}</div></details>")  # fmt: skip
    figs = "".join(f"<figure>{_img(t, b)}</figure>" for t, b in pngs.items())
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
thresholds come from shadows only. Leakage is the worst case over the audited attacks.</p>
<h2>{PARETO_TITLE}</h2>
{pareto}
{full}
<h2>Attacks in detail</h2><div class="plots">{figs}</div>
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
