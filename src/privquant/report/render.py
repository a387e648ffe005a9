"""Markdown and self-contained HTML reports, rendered from results.json alone."""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path
from typing import Any

from privquant.artifacts.atomic import atomic_write_bytes
from privquant.errors import PrivquantError
from privquant.metrics import relative_change
from privquant.report import plots

COLUMNS = [("auc", "AUC"), ("tpr@1%fpr", "TPR@1%"), ("tpr@0.1%fpr", "TPR@0.1%"), ("tpr@0.01%fpr", "TPR@0.01%"),
           ("accuracy", "acc"), ("precision", "prec"), ("recall", "recall"), ("f1", "F1"), ("advantage", "adv")]  # fmt: skip


def _fmt(entry: dict[str, Any], key: str, multi: bool) -> str:
    m = entry["mean"][key]
    ci = next(iter(entry["per_target"].values())).get("ci", {}).get(key)
    text = f"{m:.3f}"
    if multi:
        text += f" ± {entry['std'][key]:.3f}"
    elif ci:
        text += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
    return text


def _rel(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:+.1f}%"


def metrics_rows(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    multi = len(results["config"]["targets"]) > 1
    header = ["variant", "bits", "bytes", "test acc", "attack", *[c[1] for c in COLUMNS],
              "Δacc / ΔTPR / ΔF1 vs FP32"]  # fmt: skip
    rows = []
    fp = results["variants"]["fp32"]["attacks"]
    for name, v in results["variants"].items():
        settings = [(name, v["attacks"])]
        if "attacks_naive_fp32_shadows" in v:  # labelled: the weaker, non-adaptive attacker
            settings.append((f"{name} (naive: FP32 shadows)", v["attacks_naive_fp32_shadows"]))
        for label, attacks in settings:
            for attack, entry in attacks.items():
                rel = [
                    relative_change(fp[attack]["mean"][k], entry["mean"][k])
                    for k in ("accuracy", "recall", "f1")
                ]
                rows.append([label, f"{v['bits']:.2f}", str(v["size_bytes"]), f"{v['test_accuracy']:.4f}", attack,
                             *[_fmt(entry, k, multi) for k, _ in COLUMNS], " / ".join(_rel(r) for r in rel)])  # fmt: skip
    return header, rows


def _headline_attack(results: dict[str, Any]) -> str:
    attacks = list(next(iter(results["variants"].values()))["attacks"])
    for preferred in ("lira_online_fixed_var", "lira_online", "rmia", "lira_offline_fixed_var"):
        if preferred in attacks:
            return preferred
    return attacks[0]


def render_markdown(results: dict[str, Any], figures: dict[str, str]) -> str:
    cfg = results["config"]
    header, rows = metrics_rows(results)
    lines = [
        f"# privquant audit: {cfg['name']}",
        "",
        f"Dataset **{results['dataset']['name']}** (sha256 `{results['dataset']['sha256'][:16]}…`), model "
        f"**{cfg['model']['name']}**, {results['split']['n_models']} models on random halves of a pool of "
        f"{results['split']['pool_size']} points, targets {cfg['targets']}, seed {cfg['seed']}. Every variant is "
        "applied to the target **and** to the shadow models (adaptive attacker). Decision thresholds come from "
        "shadow models only. Values are means over targets (± std), or with a 95% bootstrap CI for one target. "
        "Relative change is (FP32 − variant) / FP32, as Famili & Lao report it: positive means less leakage.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *["| " + " | ".join(r) + " |" for r in rows],
        "",
    ]
    for title, fname in figures.items():
        lines += [f"## {title}", "", f"![{title}]({fname})", ""]
    t = results["timings_seconds"]
    lines += [f"Wall time: {t['total']:.0f} s (training {t['train_models']:.0f} s, variants {t['variants_and_signals']:.0f} s, "
              f"attacks {t['attacks']:.0f} s). Machine: {results['machine']}.", ""]  # fmt: skip
    return "\n".join(lines)


def render_html(results: dict[str, Any], pngs: dict[str, bytes]) -> str:
    cfg = results["config"]
    header, rows = metrics_rows(results)
    table = "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"
    for r in rows:
        table += "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
    table += "</table>"
    figs = "".join(
        f"<h2>{html.escape(t)}</h2><img alt='{html.escape(t)}' src='data:image/png;base64,{base64.b64encode(b).decode()}'>"
        for t, b in pngs.items()
    )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>privquant audit: {html.escape(cfg["name"])}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}}table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}td:nth-child(1),td:nth-child(5){{text-align:left}}
th{{background:#f3f3f3}}img{{max-width:100%;margin:0.5em 0}}</style></head><body>
<h1>privquant audit: {html.escape(cfg["name"])}</h1>
<p>Dataset <b>{html.escape(results["dataset"]["name"])}</b>, model <b>{html.escape(cfg["model"]["name"])}</b>,
{results["split"]["n_models"]} models on random halves of a pool of {results["split"]["pool_size"]} points, targets
{cfg["targets"]}, seed {cfg["seed"]}. Variants are applied to target and shadows (adaptive attacker); thresholds come
from shadows only. Relative change is (FP32 − variant) / FP32.</p>
{table}{figs}
<p>Wall time {results["timings_seconds"]["total"]:.0f} s. privquant {html.escape(results["privquant_version"])}.</p>
</body></html>"""


def render_report(
    results: dict[str, Any] | str | os.PathLike[str], run_dir: str | os.PathLike[str] | None = None
) -> Path:
    """Write report.md, report.html and the figures into ``run_dir``; return the HTML path."""
    if not isinstance(results, dict):
        path = Path(results)
        run_dir = run_dir or path.parent
        try:
            results = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise PrivquantError(f"{path}: cannot read results ({e})") from e
    if results.get("format") != "privquant-results/1":
        raise PrivquantError("results.json: unknown format; expected privquant-results/1")
    run_dir = Path(run_dir or ".")
    headline = _headline_attack(results)
    attacks = list(next(iter(results["variants"].values()))["attacks"])
    pngs = {f"ROC (log-log): {a}": plots.roc_figure(results, a) for a in attacks}
    pngs[f"Score histograms: {headline}"] = plots.histogram_figure(results, headline)
    pngs[f"Privacy / utility / size ({headline})"] = plots.pareto_figure(results, headline)
    figures = {}
    for i, (title, data) in enumerate(pngs.items()):
        fname = f"figures/fig{i:02d}.png"
        atomic_write_bytes(run_dir / fname, data)
        figures[title] = fname
    atomic_write_bytes(run_dir / "report.md", render_markdown(results, figures).encode())
    atomic_write_bytes(run_dir / "report.html", render_html(results, pngs).encode())
    return run_dir / "report.html"
