from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_reports_every_metric, require_dataset
from privquant.artifacts import ArtifactCache
from privquant.attacks import ATTACKS, Signals, attack_scores, run_attacks
from privquant.cli import main
from privquant.data import load_dataset
from privquant.errors import ConfigError, PrivquantError
from privquant.membership import MembershipSplit, make_split
from privquant.population import train_population
from privquant.signals import collect_signals, query_views
from privquant.training import TrainConfig


def synthetic_signals(
    m: int = 8, n: int = 600, q: int = 2, c: int = 5, gap: float = 2.0, seed: int = 0
) -> Signals:
    """Logits whose true-class margin is larger when the point was trained on."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    keep = rng.random((m, n)) < 0.5
    difficulty = rng.normal(0, 1.5, n)  # per-point offset, what LiRA calibrates away
    logits = rng.normal(0, 1, (m, n, q, c))
    boost = difficulty[None, :, None] + gap * keep[:, :, None] + rng.normal(0, 0.5, (m, n, q))
    np.put_along_axis(logits, np.broadcast_to(labels[None, :, None, None], (m, n, q, 1)),
                      boost[..., None] + 2.0, axis=-1)  # fmt: skip
    # The share of 16 noisy copies still labelled correctly grows with the margin.
    robust = np.round(16 / (1 + np.exp(-boost.mean(-1)))) / 16
    return Signals(logits.astype(np.float32), labels, keep, extras={"noise_robustness": robust})


def null_signals(m: int, n: int = 4000, balanced: bool = False, seed: int = 0) -> Signals:
    """Outputs that do not depend on membership at all (per-point difficulty, model noise)."""
    rng = np.random.default_rng(seed)
    keep = make_split(n + 10, 10, n, m, seed=seed, balanced=balanced).keep
    labels = rng.integers(0, 10, n)
    difficulty = rng.normal(0, 2, n)
    logits = rng.normal(0, 1, (m, n, 2, 10))
    boost = difficulty[None, :, None] + rng.normal(0, 1, (m, n, 2)) + 2
    np.put_along_axis(
        logits,
        np.broadcast_to(labels[None, :, None, None], (m, n, 2, 1)),
        boost[..., None],
        axis=-1,
    )
    robust = np.round(16 / (1 + np.exp(-boost.mean(-1)))) / 16
    return Signals(logits.astype(np.float32), labels, keep, extras={"noise_robustness": robust})


def test_signals_round_trip_and_validation(tmp_path: Path) -> None:
    s = synthetic_signals()
    s.save(tmp_path / "s.npz")
    t = Signals.load(tmp_path / "s.npz")
    assert np.array_equal(t.logits, s.logits) and np.array_equal(t.keep, s.keep)
    with pytest.raises(PrivquantError, match=r"signals.keep: expected \[8, 600\]"):
        Signals(s.logits, s.labels, s.keep[:, :10])
    with pytest.raises(PrivquantError, match="labels"):
        Signals(s.logits, s.labels + 10, s.keep)
    np.savez(tmp_path / "bad.npz", logits=s.logits)
    with pytest.raises(PrivquantError, match=r"bad.npz.*missing arrays \['keep', 'labels'\]"):
        Signals.load(tmp_path / "bad.npz")


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_no_attack_reads_the_targets_membership(name: str) -> None:
    """Scores and thresholds are unchanged whatever the target's row of keep says: shuffled
    (same count), inverted, all members, no members (an attack leaking the count fails)."""
    s = synthetic_signals(m=6, n=300)
    scores, thr = attack_scores(s, name, target=2)
    row = s.keep[2]
    for altered in (
        np.random.default_rng(9).permutation(row),
        ~row,
        np.ones_like(row),
        np.zeros_like(row),
    ):
        keep = s.keep.copy()
        keep[2] = altered
        other = Signals(s.logits, s.labels, keep, extras=s.extras)
        scores2, thr2 = attack_scores(other, name, target=2)
        np.testing.assert_array_equal(scores, scores2)
        assert thr == thr2


@pytest.mark.slow
@pytest.mark.parametrize("balanced", [False, True], ids=["coin-flip", "balanced"])
@pytest.mark.parametrize("n_models", [5, 9])
def test_every_attack_is_at_chance_without_a_membership_signal(
    n_models: int, balanced: bool
) -> None:
    """4,000 points: the AUC's standard error is about 0.009, so 0.03 is over 3 of them. Online
    LiRA without even reference counts scored 0.37-0.44 here under the balanced scheme."""
    s = null_signals(n_models, balanced=balanced)
    res = run_attacks(s, targets=[0, 1], attacks="all", n_bootstrap=0, progress=False)
    assert set(res["attacks"]) == set(ATTACKS)
    for name, entry in res["attacks"].items():
        assert abs(entry["mean"]["auc"] - 0.5) < 0.03, (name, entry["mean"]["auc"])


def test_attacks_detect_synthetic_leakage_and_reference_attacks_use_difficulty() -> None:
    s = synthetic_signals(m=16, n=2000, gap=1.0)
    res = run_attacks(s, targets=[0, 1], attacks="loss,lira_online_fixed_var,rmia,rmia_online", n_bootstrap=0,
                      progress=False)  # fmt: skip
    auc = {k: v["mean"]["auc"] for k, v in res["attacks"].items()}
    assert 0.6 < auc["loss"] < 0.75
    # Per-point calibration against reference models pays off for LiRA and RMIA alike.
    for name in ("lira_online_fixed_var", "rmia", "rmia_online"):
        assert auc[name] > auc["loss"] + 0.1, (name, auc)


def test_confident_members_keep_full_resolution() -> None:
    """Margins far beyond where float64 rounds p_y to 1: members (margin 60-80) above non-members
    (40-60). A log-softmax loss ties them all at exactly 0 and finds nobody at 1% FPR."""
    rng = np.random.default_rng(0)
    n, m = 2000, 5
    keep = rng.random((m, n)) < 0.5
    margin = 40 + 20 * rng.random((m, n)) + 20 * keep
    logits = np.zeros((m, n, 1, 3), np.float32)
    logits[..., 0, 0] = margin
    s = Signals(logits, np.zeros(n, np.int64), keep)
    res = run_attacks(s, targets=[0], attacks="loss,confidence,modified_entropy,rmia_online", n_bootstrap=0,
                      progress=False)  # fmt: skip
    for name, entry in res["attacks"].items():
        assert entry["mean"]["auc"] > 0.8, (name, entry["mean"])
        # RMIA's ratio p_target / mean(p_refs) is, at p ~ 1, 1 + mean(1 - p_refs) - (1 - p_target):
        # its top scores go to points whose references are least confident, whatever the target
        # did, so its TPR at 1% FPR is low here by construction. Its resolution is what matters:
        # logsumexp - log(n) rounded those log-means to 0 (AUC 0.74 before _log_mean_exp).
        if name != "rmia_online":
            assert entry["mean"]["tpr@1%fpr"] > 0.05, (name, entry["mean"])
    scores, _ = attack_scores(s, "rmia_online", 0)
    assert len(np.unique(scores)) == n


def test_rmia_equals_its_formula_on_a_hand_computed_case() -> None:
    """3 models, 4 points, 2 classes, one query; target 0, references 1 and 2."""
    from privquant.attacks.rmia import rmia_score

    p = np.array(
        [[0.9, 0.6, 0.5, 0.99], [0.8, 0.7, 0.5, 0.6], [0.6, 0.5, 0.4, 0.7]]
    )  # p_y per model
    logits = np.zeros((3, 4, 1, 2))
    logits[..., 0, 0] = np.log(p / (1 - p))  # label 0: softmax gives back p_y exactly
    keep = np.array([[1, 0, 1, 0], [1, 1, 0, 0], [0, 1, 1, 0]], bool)
    s = Signals(logits, np.zeros(4, np.int64), keep)
    refs = np.array([1, 2])
    # Online: Pr(x) = (mean over IN references + mean over OUT references) / 2, or the plain
    # mean where one side is empty (point 3: both references OUT).
    p_x = np.array([(0.8 + 0.6) / 2, (0.7 + 0.5) / 2, (0.4 + 0.5) / 2, (0.6 + 0.7) / 2])
    ratio = p[0] / p_x
    frac = np.array([(ratio < r).sum() for r in ratio]) / 4
    tie_break = (0.5 + np.arctan(np.log(ratio)) / np.pi) / 5
    np.testing.assert_allclose(rmia_score(s, 0, refs, online=True), frac + tie_break, atol=1e-6)
    # Offline with a = 0.5: Pr(x) = ((1 + a) p_OUT + 1 - a) / 2 over OUT references only; point 1
    # has none and borrows 1 - mean(1 - p) over every reference output (0.6).
    p_out = np.array([0.6, 0.6, 0.5, 0.65])
    ratio = p[0] / (0.5 * (1.5 * p_out + 0.5))
    frac = np.array([(ratio < r).sum() for r in ratio]) / 4
    tie_break = (0.5 + np.arctan(np.log(ratio)) / np.pi) / 5
    np.testing.assert_allclose(rmia_score(s, 0, refs, offline_a=0.5), frac + tie_break, atol=1e-6)


def test_rmia_offline_a_is_tuned_on_shadows_by_the_full_search() -> None:
    """The tuned a is the grid point whose full offline RMIA has the best mean shadow AUC."""
    from privquant.attacks.rmia import A_GRID, _log_ratios, tune_offline_a
    from privquant.metrics import auc

    s = synthetic_signals(m=8, n=600)
    refs = np.arange(1, 8)

    def shadow_auc(a: float) -> float:
        return float(np.mean([auc(_log_ratios(s, int(p), refs[refs != p], False, a, 1.0)[0], s.keep[p])
                              for p in refs[:2]]))  # fmt: skip

    aucs = [shadow_auc(float(a)) for a in A_GRID]
    assert tune_offline_a(s, refs) == float(A_GRID[int(np.argmax(aucs))])
    assert len(set(np.round(aucs, 6))) > 1  # a matters on these signals, so the test can fail


def test_rmia_uses_the_population_block_when_present() -> None:
    from privquant.attacks.rmia import rmia_score

    s = synthetic_signals(m=6, n=400)
    pop = synthetic_signals(m=6, n=300, seed=5)
    with_pop = Signals(s.logits, s.labels, s.keep, pop.logits, pop.labels)
    a, b = (
        rmia_score(s, 0, np.arange(1, 6), online=True),
        rmia_score(with_pop, 0, np.arange(1, 6), online=True),
    )
    assert not np.allclose(a, b)  # the population part of the score comes from the other rows
    assert np.array_equal(
        np.argsort(a, kind="stable"), np.argsort(b, kind="stable")
    )  # same ranking


def test_probabilities_passed_as_logits_are_refused() -> None:
    s = synthetic_signals(m=4, n=50)
    probs = np.exp(s.logits) / np.exp(s.logits).sum(-1, keepdims=True)
    with pytest.raises(PrivquantError, match="probability vector"):
        Signals(probs, s.labels, s.keep)
    Signals(np.log(probs), s.labels, s.keep)  # log-probabilities are fine: softmax-invariant


def test_attacks_needing_model_measurements_are_skipped_or_refused() -> None:
    s = synthetic_signals(m=4, n=50)
    bare = Signals(s.logits, s.labels, s.keep)
    res = run_attacks(bare, targets=[0], attacks="all", n_bootstrap=0, progress=False)
    assert "label_only_noise" not in res["attacks"] and "loss" in res["attacks"]
    with pytest.raises(ConfigError, match="noise_queries"):
        run_attacks(bare, targets=[0], attacks=["label_only_noise"], n_bootstrap=0, progress=False)


# ------------------------------------------------------------------------ real trained models
def _train_and_collect(ds, split, cfg, cache: Path, noise_queries: int = 0, **opts) -> Signals:
    paths = train_population(ds, split, "mlp", cfg, ArtifactCache(cache), opts, progress=False)
    x, y = ds.x_train[split.pool], ds.y_train[split.pool]
    return collect_signals(paths, x, y, split.keep, query_views(ds.kind, 2), progress=False,
                           noise_queries=noise_queries)  # fmt: skip


@pytest.fixture(scope="module")
def memorizing_signals(tmp_path_factory: pytest.TempPathFactory) -> Signals:
    """6 MLPs that memorize random labels of digits: members are fitted, non-members cannot be."""
    ds = load_dataset("digits")
    ds.y_train = np.random.default_rng(0).integers(0, 10, len(ds.y_train))
    split = make_split(len(ds.y_train), len(ds.y_test), pool_size=400, n_models=6, seed=0)
    cfg = TrainConfig(epochs=100, batch_size=32, optimizer="adam", lr=3e-3, weight_decay=0)
    return _train_and_collect(
        ds, split, cfg, tmp_path_factory.mktemp("mem"), noise_queries=12, hidden=(256, 256)
    )


@pytest.fixture(scope="module")
def exchangeable_signals(tmp_path_factory: pytest.TempPathFactory) -> Signals:
    """Models trained on rows outside the pool: pool 'members' and 'non-members' are exchangeable."""
    ds = load_dataset("digits")
    split = make_split(
        len(ds.y_train), len(ds.y_test), pool_size=600, n_models=6, reference_size=600, seed=1
    )
    # Every model trains on a random half of the reference rows; the audit then asks about pool
    # rows that no model has seen, with split.keep as the (meaningless) membership labels.
    elsewhere = MembershipSplit(split.reference, np.random.default_rng(2).random((6, 600)) < 0.5,
                                np.array([], dtype=np.int64), split.test, 1)  # fmt: skip
    cfg = TrainConfig(epochs=30, batch_size=32, optimizer="adam", lr=3e-3, weight_decay=0)
    paths = train_population(ds, elsewhere, "mlp", cfg, ArtifactCache(tmp_path_factory.mktemp("exch")),
                             {"hidden": (256, 256)}, progress=False)  # fmt: skip
    x, y = ds.x_train[split.pool], ds.y_train[split.pool]
    return collect_signals(
        paths, x, y, split.keep, query_views(ds.kind, 2), progress=False, noise_queries=12
    )


@pytest.mark.slow
def test_every_attack_finds_a_memorizing_model(memorizing_signals: Signals) -> None:
    res = run_attacks(memorizing_signals, targets=[0], n_bootstrap=0, progress=False)
    assert set(res["attacks"]) == set(ATTACKS)  # the label-only noise attack included
    weak = {"entropy", "entropy_classwise", "lira_online", "lira_offline"}  # see the comments below
    for name, entry in res["attacks"].items():
        auc = entry["mean"]["auc"]
        # Entropy ignores the (random) label, and per-example variances from 2-3 references are
        # noise: those reach a clearly non-trivial AUC, the rest a high one.
        assert auc > (0.6 if name in weak else 0.85), (name, auc)


@pytest.mark.slow
def test_attacks_are_near_chance_when_members_are_exchangeable(
    exchangeable_signals: Signals,
) -> None:
    res = run_attacks(exchangeable_signals, targets=[0, 3], n_bootstrap=0, progress=False)
    assert set(res["attacks"]) == set(ATTACKS)
    for name, entry in res["attacks"].items():
        # 600 points: the AUC's standard error is about 0.024; 0.08 is over 3 standard errors.
        assert abs(entry["mean"]["auc"] - 0.5) < 0.08, (name, entry["mean"]["auc"])


def test_attack_cli_writes_every_metric(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s = synthetic_signals(m=5, n=400)
    s.save(tmp_path / "s.npz")
    rc = main(["attack", "--signals", str(tmp_path / "s.npz"), "--target", "0", "--attacks", "all",
               "--bootstrap", "20", "--json", str(tmp_path / "out.json")])  # fmt: skip
    assert rc == 0
    out = capsys.readouterr().out
    assert "lira_online" in out and "auc" in out
    res = json.loads((tmp_path / "out.json").read_text())
    m = res["attacks"]["loss"]["per_target"]["0"]
    assert_reports_every_metric(m)
    assert set(res["attacks"]) == set(ATTACKS)
    assert main(["attack", "--signals", str(tmp_path / "s.npz"), "--attacks", "nope"]) == 2


@pytest.mark.slow
def test_lira_beats_loss_at_low_fpr_on_real_models(tmp_path: Path) -> None:
    """8 MLPs on halves of a 4,000-image Fashion-MNIST pool, 4 targets, 2 query views."""
    ds = require_dataset("fashion-mnist")
    split = make_split(len(ds.y_train), len(ds.y_test), pool_size=4000, n_models=8, seed=0)
    cfg = TrainConfig(epochs=20, batch_size=64, lr=0.05)
    signals = _train_and_collect(ds, split, cfg, tmp_path / "cache", hidden=(256, 256))
    res = run_attacks(signals, targets=[0, 1, 2, 3], attacks="loss,lira_online_fixed_var", n_bootstrap=0,
                      progress=False)  # fmt: skip
    lira, loss = (res["attacks"][a]["mean"] for a in ("lira_online_fixed_var", "loss"))
    # Measured: TPR@1%FPR 0.090 vs 0.010, AUC 0.707 vs 0.585. At 1% FPR each target has ~20 false
    # positives, so the comparison does not hinge on one or two points (as 0.1% FPR would).
    assert lira["tpr@1%fpr"] > 3 * loss["tpr@1%fpr"] and lira["tpr@1%fpr"] > 0.04, (lira, loss)
    assert lira["auc"] > loss["auc"] + 0.08


def test_statistics_computed_a_few_models_at_a_time_equal_the_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import privquant.signals.format as fmt
    from privquant.attacks import run_attacks

    names = ["loss", "shokri", "lira_online", "rmia_online", "label_only_correctness"]
    s = synthetic_signals(m=8, n=300)
    pop = Signals(s.logits, s.labels, s.keep, s.logits[:, :50], s.labels[:50])
    whole = run_attacks(pop, [0], names, n_bootstrap=0, progress=False)
    monkeypatch.setattr(fmt, "CHUNK_BYTES", pop.logits[0].size * 8 * 3)  # 3 models per chunk
    pop_chunked = Signals(s.logits, s.labels, s.keep, s.logits[:, :50], s.labels[:50])
    chunked = run_attacks(pop_chunked, [0], names, n_bootstrap=0, progress=False)
    assert pop_chunked._stats.keys() == pop._stats.keys()
    for k in pop._stats:
        np.testing.assert_array_equal(pop_chunked._stats[k], pop._stats[k])
    for a in names:
        assert (
            chunked["attacks"][a]["per_target"]["0"]["auc"]
            == whole["attacks"][a]["per_target"]["0"]["auc"]
        )


def test_shokri_scores_do_not_depend_on_how_many_processes_share_the_fits() -> None:
    """The per-class attack classifiers are fit in worker processes where cores allow; the scores
    must be those of fitting them one after another in this process, to the last bit."""
    from privquant.attacks.shokri import shokri_score

    s = synthetic_signals(m=8, n=1200, c=5)
    refs = np.arange(1, 8)
    serial = shokri_score(s, 0, refs, jobs=1)
    pooled = shokri_score(s, 0, refs, jobs=2)
    np.testing.assert_array_equal(serial, pooled)
    assert serial[s.keep[0]].mean() > serial[~s.keep[0]].mean() + 0.1  # a real attack, not constant


def test_the_attack_classifiers_workers_do_not_load_torch() -> None:
    """A worker process imports only the module of the function it runs: that module must stay
    free of torch (3-6 s per worker on a 2-core host), so it is checked in a fresh interpreter."""
    import subprocess
    import sys

    code = "import sys, privquant.attack_classifiers; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
