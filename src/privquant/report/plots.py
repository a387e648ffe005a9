"""Figures of a report, returned as PNG bytes (matplotlib, headless)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import LogLocator, NullFormatter  # noqa: E402

from privquant.results import AuditResults, tradeoff_points  # noqa: E402


def _png(fig: plt.Figure, tight: bool = True) -> bytes:
    """``tight=False`` for a figure whose margins were set by hand: the tight box costs a second
    draw of the figure (about a third of the figures' time, docs/results/suite_time.md), paid once
    per attack in every report."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight" if tight else None)
    plt.close(fig)
    return buf.getvalue()


def roc_figure(results: AuditResults, attack: str) -> bytes:
    """Log-log ROC of one attack, one line per variant: pooled over targets on the worst-case
    subset (canaries) when the audit has one (solid) and on the rest of the pool (dashed);
    TPR averaged over targets for results written before pooling."""
    fig, ax = plt.subplots(figsize=(5, 4.2))
    subset = ""
    for i, (name, v) in enumerate(results.variants.items()):
        entry = v.attacks.get(attack)
        if entry is None or not entry.curves:
            continue
        color = f"C{i % 10}"
        if entry.pooled:
            lead, rest = entry.lead_subset(), entry.population_subset()
            subset = "canaries solid, rest dashed" if lead != rest else "pooled over targets"
            for sub, style in ((lead, "-"), (rest, "--")) if lead != rest else ((lead, "-"),):
                p = entry.pooled[sub]
                if p.roc is None:
                    continue
                label = f"{name} {sub} (AUC {p.auc:.3f})" if p.auc is not None else name
                ax.step(p.roc.roc_fpr, np.maximum(p.roc.roc_tpr, 1e-5), style, where="post", color=color,
                        label=label, lw=1.2 if style == "-" else 0.9)  # fmt: skip
            continue
        fpr = np.asarray(next(iter(entry.curves.values())).roc_fpr)
        tpr = np.mean([c.roc_tpr for c in entry.curves.values()], axis=0)
        auc = entry.mean["auc"]
        ax.step(
            fpr, np.maximum(tpr, 1e-5), where="post", color=color, label=f"{name} (AUC {auc:.3f})"
        )
    ax.plot([1e-5, 1], [1e-5, 1], "k:", lw=0.8, label="chance")
    ax.set(xscale="log", yscale="log", xlim=(1e-4, 1), ylim=(1e-4, 1.05), xlabel="false positive rate",
           ylabel="true positive rate", title=f"ROC: {attack}" + (f" ({subset})" if subset else ""))  # fmt: skip
    ax.title.set_fontsize(9)
    ax.legend(fontsize=6, loc="lower right")
    for axis in (ax.xaxis, ax.yaxis):  # minor lines at 2 and 5 only: all eight took 40% of a report
        axis.set_minor_locator(LogLocator(subs=(2, 5)))
        axis.set_minor_formatter(NullFormatter())
    ax.grid(alpha=0.3, which="both")
    # Fixed size, legend inside the axes: fixed margins hold every label
    fig.subplots_adjust(left=0.15, right=0.96, bottom=0.12, top=0.93)
    return _png(fig, tight=False)


def histogram_figure(results: AuditResults, attack: str) -> bytes:
    """Score histograms of members vs non-members for the first target, one panel per variant."""
    names = [
        n for n, v in results.variants.items() if attack in v.attacks and v.attacks[attack].curves
    ]
    fig, axes = plt.subplots(
        1, max(1, len(names)), figsize=(3.2 * max(1, len(names)), 2.8), squeeze=False
    )
    curves: dict = {}
    for ax, name in zip(axes[0], names, strict=False):
        curves = results.variants[name].attacks[attack].curves
        c = next(iter(curves.values()))
        edges = np.asarray(c.hist_edges)
        # One filled step patch per histogram: bar() drew one artist per bin (3x the time)
        ax.stairs(c.hist_nonmembers, edges, fill=True, alpha=0.55, label="non-members")
        ax.stairs(c.hist_members, edges, fill=True, alpha=0.55, label="members")
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7)
    # Above the panels' own titles (at the default height it crossed them)
    fig.suptitle(f"{attack} scores (target {next(iter(curves), '-')})", fontsize=10, y=0.98)
    # Margins in inches, whatever the number of panels (each 3.2 x 2.8 in)
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=0.45 / width, right=1 - 0.1 / width, bottom=0.3 / height, top=0.8,
                        wspace=0.25)  # fmt: skip
    return _png(fig, tight=False)


def pareto_figure(results: AuditResults) -> bytes:
    """Privacy-utility-size: test accuracy vs the worst-case TPR at 1% FPR (canaries when
    planted) and the population TPR at 0.1% FPR, each pooled over targets with its 95% interval
    as a bar; marker area by model bytes; frontier points outlined and joined."""
    points = tradeoff_points(results)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    biggest = max((p.size_bytes for p in points), default=1)
    colors = plt.cm.tab20(np.linspace(0, 1, len(points)))  # none without test accuracies
    lead = points[0].lead_subset if points else "all"
    panels = (("worst_1", 0.01, "frontier_1", f"{lead}: worst-case TPR at 1% FPR"),
              ("population_01", 0.001, "frontier_01", "population: worst-case TPR at 0.1% FPR"))  # fmt: skip
    for ax, (metric, fpr, flag, ylabel) in zip(axes, panels, strict=True):
        floor = fpr / 20  # log axis: a zero TPR sits at the floor
        for p, color in zip(points, colors, strict=True):
            leak = getattr(p, metric)
            y = max(leak.value, floor)
            if leak.ci is not None:
                lo, hi = max(leak.ci[0], floor), max(leak.ci[1], floor)
                ax.errorbar(p.test_accuracy, y, yerr=[[y - lo], [hi - y]], color=color, alpha=0.7, lw=1,
                            capsize=2)  # fmt: skip
            style = ({"edgecolors": "k" if getattr(p, flag) else "none", "marker": "o"} if leak.resolved
                     else {"marker": "x"})  # fmt: skip
            ax.scatter(p.test_accuracy, y, s=30 + 500 * p.size_bytes / biggest, color=color, alpha=0.6,
                       linewidths=1.5, label=f"{p.variant} ({p.size_bytes / 1024:.0f} KiB)", **style)  # fmt: skip
            ax.annotate(p.variant, (p.test_accuracy, y), fontsize=6, xytext=(3, 3),
                        textcoords="offset points")  # fmt: skip
        front = sorted((p for p in points if getattr(p, flag)), key=lambda p: p.test_accuracy)
        if front:
            ys = [max(getattr(p, metric).value, floor) for p in front]
            ax.plot([p.test_accuracy for p in front], ys, "k--", lw=0.8, alpha=0.6)
        ax.axhline(fpr, color="k", ls=":", lw=0.8)  # chance: TPR = FPR
        ax.set(yscale="log", xlabel="test accuracy", ylabel=ylabel,
               title=f"at {100 * fpr:g}% FPR (dotted: chance; x: unresolved level)")  # fmt: skip
        ax.grid(alpha=0.3, which="both")
    if points:
        axes[1].legend(fontsize=6, markerscale=0.35, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.suptitle("privacy / utility / size: outlined and joined = not dominated; bars = 95% intervals; "
                 "marker area = model bytes", fontsize=10)  # fmt: skip
    return _png(fig)


def thumbnails_figure(
    images: np.ndarray, labels: list[str], members: list[bool], scores: list[float]
) -> bytes:
    """A grid of uint8 images [N, C, H, W], each titled with its class, truth and score."""
    n = len(images)
    cols = min(8, max(1, n))
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(1.35 * cols, 1.6 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, img, label, member, score in zip(
        axes.ravel(), images, labels, members, scores, strict=False
    ):
        pic = np.transpose(img, (1, 2, 0))
        ax.imshow(
            pic[..., 0] if pic.shape[-1] == 1 else pic, cmap="gray" if pic.shape[-1] == 1 else None
        )
        ax.set_title(f"{label[:10]}\n{'member' if member else 'non-member'}\n{score:.3g}", fontsize=6,
                     color="#b00" if member else "#555")  # fmt: skip
    return _png(fig)
