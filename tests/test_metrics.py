from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

from privquant.metrics import (
    auc,
    best_threshold,
    decision_metrics,
    evaluate_scores,
    relative_change,
    roc_curve,
    tpr_at_fpr,
)


def test_auc_matches_sklearn_with_ties() -> None:
    rng = np.random.default_rng(0)
    members = rng.random(2000) < 0.4
    scores = np.round(rng.normal(size=2000) + members * 0.7, 1)  # many ties
    assert auc(scores, members) == pytest.approx(roc_auc_score(members, scores), abs=1e-12)
    assert evaluate_scores(scores, members, 0.0, n_bootstrap=0)["auc"] == pytest.approx(
        roc_auc_score(members, scores)
    )


def test_decision_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(1)
    members = rng.random(500) < 0.5
    predicted = rng.random(500) < np.where(members, 0.7, 0.4)
    got = decision_metrics(predicted, members)
    assert got["precision"] == pytest.approx(precision_score(members, predicted))
    assert got["recall"] == pytest.approx(recall_score(members, predicted))
    assert got["f1"] == pytest.approx(f1_score(members, predicted))
    assert got["accuracy"] == pytest.approx(accuracy_score(members, predicted))
    assert got["nonmember_f1"] == pytest.approx(f1_score(~members, ~predicted))
    assert got["advantage"] == pytest.approx(got["tpr"] - got["fpr"])


def test_tpr_at_fpr_is_exact_not_interpolated() -> None:
    # Non-members at 0.9, 0.5, 0.4, 0.3, 0.2 (5 of them); members at 0.8, 0.7, 0.1.
    scores = np.array([0.9, 0.8, 0.7, 0.5, 0.4, 0.3, 0.2, 0.1])
    members = np.array([0, 1, 1, 0, 0, 0, 0, 1], dtype=bool)
    assert tpr_at_fpr(scores, members, 0.1) == 0.0  # any threshold catching a member also hits 0.9
    assert tpr_at_fpr(scores, members, 0.2) == pytest.approx(2 / 3)
    fpr, tpr, thr = roc_curve(scores, members)
    assert fpr[0] == 0 and tpr[-1] == 1 and np.isinf(thr[0])


@pytest.mark.parametrize("fpr_level", [0.01, 0.001])
def test_tpr_at_fpr_matches_gaussian_analytic_value(fpr_level: float) -> None:
    rng = np.random.default_rng(2)
    n, shift = 20_000, 1.5
    members = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    scores = np.r_[rng.normal(shift, 1, n), rng.normal(0, 1, n)]
    analytic = 1 - norm.cdf(norm.ppf(1 - fpr_level) - shift)
    res = evaluate_scores(scores, members, threshold=shift / 2, n_bootstrap=200, seed=0)
    key = f"tpr@{fpr_level * 100:g}%fpr"
    lo, hi = res["ci"][key]
    assert lo <= analytic <= hi, (analytic, res[key], lo, hi)
    assert res["auc"] == pytest.approx(norm.cdf(shift / np.sqrt(2)), abs=0.01)
    assert res["balanced_accuracy"] == pytest.approx(norm.cdf(shift / 2), abs=0.01)


def test_best_threshold_separates_and_relative_change() -> None:
    scores = np.array([0.1, 0.2, 0.3, 0.8, 0.9, 1.0])
    members = np.array([0, 0, 0, 1, 1, 1], bool)
    t = best_threshold(scores, members)
    assert 0.3 < t < 0.8
    assert relative_change(0.8, 0.6) == pytest.approx(0.25)
    assert relative_change(0.0, 0.5) is None


def test_bootstrap_is_deterministic_and_brackets_the_estimate() -> None:
    rng = np.random.default_rng(3)
    members = rng.random(1000) < 0.5
    scores = rng.normal(size=1000) + members
    a = evaluate_scores(scores, members, 0.5, n_bootstrap=100, seed=4)
    b = evaluate_scores(scores, members, 0.5, n_bootstrap=100, seed=4)
    assert a["ci"] == b["ci"]
    for k in ("auc", "f1", "precision"):
        assert a["ci"][k][0] <= a[k] <= a["ci"][k][1]


def test_clopper_pearson_matches_closed_forms() -> None:
    from privquant.metrics import clopper_pearson

    # 0 of n: the upper limit is 1 - (alpha/2)^(1/n); n of n: the lower limit is (alpha/2)^(1/n).
    lo, hi = clopper_pearson(0, 20, 0.05)
    assert lo == 0 and hi == pytest.approx(1 - 0.025 ** (1 / 20))
    lo, hi = clopper_pearson(20, 20, 0.05)
    assert hi == 1 and lo == pytest.approx(0.025 ** (1 / 20))
    lo, hi = clopper_pearson(30, 100, 0.05)
    assert lo < 0.3 < hi and hi - lo < 0.2


def test_a_paired_accuracy_difference_resolves_what_two_intervals_cannot() -> None:
    from privquant.metrics.epsilon import accuracy_interval, paired_accuracy_difference_interval

    # Two models on 1,000 rows, 75.0% and 73.0%: they agree on all but 30 rows, 25 of which a
    # gets right. Their own intervals overlap; the paired one excludes 0.
    rng = np.random.default_rng(0)
    a = np.zeros(1000, bool)
    a[:750] = True
    b = a.copy()
    b[:25] = False  # a right, b wrong
    b[750:755] = True  # b right, a wrong
    perm = rng.permutation(1000)
    a, b = a[perm], b[perm]
    assert accuracy_interval(a.mean(), 1000)[0] < accuracy_interval(b.mean(), 1000)[1]
    lo, hi = paired_accuracy_difference_interval(a, b)
    assert 0 < lo < a.mean() - b.mean() < hi < 0.04
    # Antisymmetric, and degenerate only when the models never disagree.
    assert paired_accuracy_difference_interval(b, a) == pytest.approx((-hi, -lo))
    assert paired_accuracy_difference_interval(a, a) == (0.0, 0.0)
    # Equal accuracy with many disagreements: the interval straddles 0.
    c = np.resize([True, False], 1000)
    lo, hi = paired_accuracy_difference_interval(c, ~c)
    assert lo < 0 < hi
    with pytest.raises(ValueError, match="equal-length"):
        paired_accuracy_difference_interval(a, b[:10])


def test_epsilon_lower_bound_from_decisions() -> None:
    from privquant.metrics import epsilon_lower_bound

    # A perfect attack on 1000 + 1000 points, 95% overall (each rate at 97.5%, one-sided):
    # TPR >= 0.025^(1/1000) = 0.99632, FPR <= 0.00368, so epsilon >= log(0.99632 / 0.00368) = 5.60.
    e = epsilon_lower_bound(1000, 0, 0, 1000)
    assert e["tpr_low"] == pytest.approx(0.025 ** (1 / 1000))
    assert (
        e["epsilon"]
        == pytest.approx(np.log(e["tpr_low"] / e["fpr_high"]))
        == pytest.approx(5.60, abs=0.01)
    )
    # A chance-level attack proves nothing.
    assert epsilon_lower_bound(500, 500, 500, 500)["epsilon"] == 0.0
    # More evidence, same rates: a tighter (larger) bound.
    assert (
        epsilon_lower_bound(300, 30, 700, 970)["epsilon"]
        > epsilon_lower_bound(30, 3, 70, 97)["epsilon"]
        > 0
    )


def test_evaluate_scores_reports_epsilon_at_every_shadow_threshold() -> None:
    rng = np.random.default_rng(0)
    members = rng.random(4000) < 0.5
    scores = rng.normal(0, 1, 4000) + 1.5 * members
    res = evaluate_scores(scores, members, 0.75, n_bootstrap=0, audit_thresholds={"fpr@1%": 2.33})
    assert set(res["epsilon"]) == {"decision", "fpr@1%"}
    low = res["epsilon"]["fpr@1%"]
    assert low["fpr"] < 0.02 and low["tpr"] > 0.05 and low["epsilon"] > 0.5
    assert res["epsilon_lower_bound"] == max(e["epsilon"] for e in res["epsilon"].values())
