"""Figures of a report, returned as PNG bytes (matplotlib, headless)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from privquant.results import AuditResults  # noqa: E402


def _png(fig: plt.Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def roc_figure(results: AuditResults, attack: str) -> bytes:
    """Log-log ROC of one attack, one line per variant (TPR averaged over targets)."""
    fig, ax = plt.subplots(figsize=(5, 4.2))
    for name, v in results.variants.items():
        entry = v.attacks.get(attack)
        if entry is None or not entry.curves:
            continue
        fpr = np.asarray(next(iter(entry.curves.values())).roc_fpr)
        tpr = np.mean([c.roc_tpr for c in entry.curves.values()], axis=0)
        auc = entry.mean["auc"]
        ax.step(fpr, np.maximum(tpr, 1e-5), where="post", label=f"{name} (AUC {auc:.3f})")
    ax.plot([1e-5, 1], [1e-5, 1], "k:", lw=0.8, label="chance")
    ax.set(xscale="log", yscale="log", xlim=(1e-4, 1), ylim=(1e-4, 1.05), xlabel="false positive rate",
           ylabel="true positive rate", title=f"ROC: {attack}")  # fmt: skip
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3, which="both")
    return _png(fig)


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
        width = np.diff(edges)
        ax.bar(edges[:-1], c.hist_nonmembers, width, align="edge", alpha=0.55, label="non-members")
        ax.bar(edges[:-1], c.hist_members, width, align="edge", alpha=0.55, label="members")
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{attack} scores (target {next(iter(curves), '-')})", fontsize=10)
    return _png(fig)


def pareto_figure(results: AuditResults, attack: str) -> bytes:
    """Privacy-utility-size: test accuracy vs TPR at 1% FPR, marker area by model bytes."""
    fig, ax = plt.subplots(figsize=(5.2, 4))
    sizes = [v.size_bytes for v in results.variants.values()]
    biggest = max(sizes) if sizes else 1
    for name, v in results.variants.items():
        if attack not in v.attacks or v.test_accuracy is None:
            continue
        tpr = v.attacks[attack].mean["tpr@1%fpr"]
        ax.scatter(v.test_accuracy, tpr, s=40 + 600 * v.size_bytes / biggest, alpha=0.55,
                   label=f"{name}: {v.size_bytes / 1024:.0f} KiB, {v.bits:.2f} bits")  # fmt: skip
    ax.axhline(0.01, color="k", ls=":", lw=0.8, label="chance (1%)")
    ax.set(
        xlabel="test accuracy", ylabel=f"TPR at 1% FPR ({attack})", title="privacy / utility / size"
    )
    ax.legend(fontsize=7, markerscale=0.4, loc="best")
    ax.grid(alpha=0.3)
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
