"""The report rendered from a hand-written results object: every row, the relative changes, the
labelled naive rows, escaping, and nothing loaded from outside the file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from privquant.report import render_report
from privquant.results import AttackResult, AuditResults, Curves, VariantResult

GRID = [1e-3, 1e-2, 1e-1, 1.0]
NAIVE = "q4 (attacker with a miscalibrated threshold (FP32 shadows))"


def _attack(auc: float, tpr: float, acc: float, recall: float, f1: float) -> AttackResult:
    metrics = {"auc": auc, "tpr@1%fpr": tpr, "tpr@0.1%fpr": tpr / 2, "tpr@0.01%fpr": 0.0, "accuracy": acc,
               "balanced_accuracy": acc, "precision": 0.5, "recall": recall, "f1": f1, "advantage": 0.1,
               "epsilon_lower_bound": 0.7}  # fmt: skip
    curves = Curves(roc_fpr=GRID, roc_tpr=[tpr / 2, tpr, 0.5, 1.0], hist_edges=[0.0, 0.5, 1.0],
                    hist_members=[3, 7], hist_nonmembers=[7, 3])  # fmt: skip
    return AttackResult.from_targets("an <attack> & more", {"0": dict(metrics)}, {"0": curves})


def _variant(
    steps: list, bits: float, size: int, acc: float, attacks: dict, naive: dict | None = None
) -> VariantResult:
    return VariantResult(steps=steps, description=steps[0]["method"] if steps else "none", bits=bits, size_bytes=size,
                         test_accuracy=acc, test_accuracy_std=0.0, train_accuracy=acc + 0.1, attacks=attacks,
                         attacks_naive_fp32_shadows=naive)  # fmt: skip


@pytest.fixture
def results() -> AuditResults:
    fp = {
        "loss": _attack(0.60, 0.04, 0.58, 0.60, 0.50),
        "rmia_online": _attack(0.70, 0.10, 0.62, 0.80, 0.60),
    }
    q4 = {
        "loss": _attack(0.55, 0.02, 0.55, 0.45, 0.40),
        "rmia_online": _attack(0.65, 0.05, 0.60, 0.40, 0.30),
    }
    naive = {
        "loss": _attack(0.52, 0.01, 0.51, 0.30, 0.25),
        "rmia_online": _attack(0.60, 0.03, 0.55, 0.20, 0.15),
    }
    res = AuditResults(
        privquant_version="0.1.0", config={"name": "<script>alert(1)</script>", "targets": [0], "seed": 3,
                                           "model": {"name": "small_cnn"}},
        dataset={"name": "digits & co", "sha256": "ab" * 32}, split={"n_models": 4, "pool_size": 600},
        machine={"cpu": "test"}, timings_seconds={"total": 12.0, "train_models": 5.0},
        variants={"fp32": _variant([], 32, 4000, 0.9, fp),
                  "q4": _variant([{"method": "qat", "quant": {"weight_bits": 4}}], 4.0, 600, 0.88, q4, naive)},
    )  # fmt: skip
    res.fill_relative_changes()
    return res


def test_markdown_has_every_row_and_the_paper_reductions(
    results: AuditResults, tmp_path: Path
) -> None:
    render_report(results, tmp_path)
    md = (tmp_path / "report.md").read_text()
    full = md[md.index("## Every attack on every variant") :]  # below the verdict and Pareto table
    rows = [line for line in full.splitlines() if line.startswith("| ") and "---" not in line][1:]
    labels = [(r.split(" | ")[0].lstrip("| "), r.split(" | ")[5]) for r in rows]
    assert labels == [("fp32", "loss"), ("fp32", "rmia_online"), ("q4", "loss"), ("q4", "rmia_online"),
                      (NAIVE, "loss"), (NAIVE, "rmia_online")]  # fmt: skip
    # (FP32 - variant) / FP32 of accuracy / recall / F1: rmia_online q4 = 3.2% / 50.0% / 50.0%.
    q4_rmia = next(r for r in rows if r.startswith("| q4 |") and "rmia_online" in r)
    assert q4_rmia.rstrip(" |").endswith("+3.2% / +50.0% / +50.0%")
    naive_loss = next(r for r in rows if r.startswith(f"| {NAIVE}") and "| loss |" in r)
    assert naive_loss.rstrip(" |").endswith("+12.1% / +50.0% / +50.0%")
    assert "0.700" in md and "ε ≥" in md and "qat" in md
    assert results.variants["q4"].relative_change_vs_fp32["rmia_online"]["recall"] == pytest.approx(
        0.5
    )


def test_html_is_escaped_and_self_contained(results: AuditResults, tmp_path: Path) -> None:
    page = render_report(results, tmp_path).read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "digits &amp; co" in page
    sources = re.findall(r"""(?:src|href)\s*=\s*['"]([^'"]*)['"]""", page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    # Pareto table (header + 2 variants), then the full table (header + every variant x attack
    # row, naive rows included) inside a collapsible block.
    # These legacy results (no pooled metrics) leave the pooled table with its header only.
    assert page.count("<tr>") == (1 + 2) + 1 + (1 + 6)
    assert page.index("<details>") < page.index(NAIVE)


def test_report_renders_from_a_results_file(results: AuditResults, tmp_path: Path) -> None:
    results.save(tmp_path / "results.json")
    assert AuditResults.load(tmp_path) == results
    assert render_report(tmp_path / "results.json").parent == tmp_path
    assert (tmp_path / "report.html").is_file() and (tmp_path / "figures").is_dir()


def test_non_dominated_marks_exactly_the_pareto_front() -> None:
    from privquant.results import non_dominated

    # (error, leakage): a and b trade off, c is dominated by a, d duplicates b (ties stay on).
    points = [(0.10, 0.05), (0.15, 0.02), (0.12, 0.06), (0.15, 0.02), (0.30, 0.01)]
    assert non_dominated(points) == [True, True, False, True, True]


def test_tradeoff_points_use_the_worst_attack_and_the_verdict_follows_the_numbers() -> None:
    from pathlib import Path

    from privquant.report.render import tradeoff_rows, verdict
    from privquant.results import AuditResults, tradeoff_points

    results = AuditResults.load(Path(__file__).parents[1] / "docs/results/demo_defense")
    points = {p.variant: p for p in tradeoff_points(results)}
    for name, p in points.items():
        attacks = results.variants[name].attacks
        assert p.tpr_1 == max(a.mean["tpr@1%fpr"] for a in attacks.values())
        assert p.tpr_01 == max(a.mean["tpr@0.1%fpr"] for a in attacks.values())
    # fp32 has the best accuracy: always on the frontier; qat4 (same TPR@1%, lower accuracy) is not.
    assert points["fp32"].frontier_1 and not points["qat4"].frontier_1
    # sd_qat2 is dominated at 1% FPR by sd_qat4 (higher accuracy, lower TPR) but is the smallest.
    assert not points["sd_qat2"].frontier_1 and points["sd_qat2"].frontier_1_size
    text = " ".join(verdict(results))
    assert (
        "No variant within 1 point of FP32's test accuracy leaks measurably less than FP32" in text
    )
    assert "Least leakage overall: `sd_qat4`" in text and "Collapsed" not in text
    # ResNet-20: bit allocation is 0.2 points above FP32 with 4% less leakage at 0.1% FPR (noise,
    # not a defense to ship); folded 2-bit QAT leaks least because it is at 24.9% accuracy.
    r20 = " ".join(
        verdict(
            AuditResults.load(Path(__file__).parents[1] / "docs/results/cifar10_resnet20_bn_qat")
        )
    )
    assert "Ship" not in r20 and "leaks measurably less" in r20
    assert "Least leakage overall: `qat2_bn_folded`" not in r20
    assert (
        "Collapsed (below half of FP32's test accuracy; their low leakage is not a defense): `qat2_bn_folded`"
        in r20
    )
    header, rows = tradeoff_rows(results)
    assert len(rows) == len(results.variants) and header[-2] == "on frontier"
    assert header[7] == "rmia_online AUC" and header[-1].startswith("Shokri Δacc / ΔTPR / ΔF1")
    marks = {r[0]: r[-2] for r in rows}
    sd4 = next(r for r in rows if r[0] == "sd_qat4")
    assert sd4[7].startswith("0.581 ±") and sd4[-1] == "+7.7% / +7.9% / +7.4%"
    assert marks["fp32"] == "@1%, @0.1%, +size" and marks["sd_qat2"] == "+size"


def test_tidy_table_has_one_row_per_variant_attack_target() -> None:
    from pathlib import Path

    from privquant.results import AuditResults

    results = AuditResults.load(Path(__file__).parents[1] / "docs/results/demo_defense")
    rows = results.tidy()
    expected = sum(len(a.per_target) for v in results.variants.values()
                   for attacks in (v.attacks, v.attacks_naive_fp32_shadows or {}) for a in attacks.values())  # fmt: skip
    assert len(rows) == expected
    row = next(
        r
        for r in rows
        if r["variant"] == "sd_qat4" and r["attack"] == "rmia_online" and r["target"] == 1
    )
    assert (
        row["tpr@1%fpr"]
        == results.variants["sd_qat4"].attacks["rmia_online"].per_target["1"]["tpr@1%fpr"]
    )
    assert (
        row["setting"] == "adaptive" and row["size_bytes"] == results.variants["sd_qat4"].size_bytes
    )


def test_report_screenshots_at_desktop_and_phone_width(
    results: AuditResults, tmp_path: Path
) -> None:
    import struct
    import subprocess
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
    from screenshot_report import SIZES, find_browser

    if find_browser() is None:
        pytest.skip("no Chromium on this machine (Debian: apt install chromium)")
    render_report(results, tmp_path / "run")
    script = Path(__file__).parents[1] / "scripts" / "screenshot_report.py"
    subprocess.run([sys.executable, str(script), str(tmp_path / "run"), "--out", str(tmp_path / "shots")],
                   check=True, timeout=300)  # fmt: skip
    for name, (width, height) in SIZES.items():
        png = (tmp_path / "shots" / f"report-{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert struct.unpack(">II", png[16:24]) == (width, height)


def test_degenerate_audits_are_flagged_before_the_verdict() -> None:
    from privquant.report.render import verdict

    results = AuditResults.load(Path(__file__).parents[1] / "docs" / "results" / "demo_strict")
    assert results.degenerate_warnings() == []  # 8 models, FP32 at 83.5%
    results.variants["fp32"].test_accuracy = 0.104
    results.split["n_models"] = 3
    warnings = results.degenerate_warnings()
    assert "at chance (10% for 10 classes)" in warnings[0]
    assert "rmia_online" in warnings[1] and "with 3 models: about 1 IN and 1 OUT" in warnings[1]
    lines = verdict(results)
    assert lines[0].startswith("**Warning:** FP32 test accuracy 10.4% is at chance")


def test_figures_with_hand_set_margins_keep_every_label_on_the_canvas(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # ROCs and histograms skip bbox_inches="tight" (a second draw per figure); their fixed margins
    # must still hold every title, tick label and legend entry, here on a real 8-variant audit.
    from privquant.report import plots

    results = AuditResults.load(Path(__file__).parents[1] / "docs" / "results" / "demo_strict")
    drawn = []
    monkeypatch.setattr(plots, "_png", lambda fig, tight=True: drawn.append((fig, tight)) or b"")
    longest = max(results.attack_names, key=len)
    plots.roc_figure(results, longest)
    plots.histogram_figure(results, longest)
    assert [tight for _, tight in drawn] == [False, False]
    for fig, _ in drawn:
        # The box "tight" would crop to (what is drawn, in inches) lies within the canvas.
        box = fig.get_tightbbox(fig.canvas.get_renderer())
        width, height = fig.get_size_inches()
        assert box.x0 >= -0.01 and box.y0 >= -0.01, box
        assert box.x1 <= width + 0.01 and box.y1 <= height + 0.01, (box, width, height)
