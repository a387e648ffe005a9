"""`privquant plan`: what a run still has to compute, found under the keys the run itself uses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from privquant.artifacts import ArtifactCache
from privquant.cli import main
from privquant.pipeline import load_config, run_audit
from privquant.pipeline.plan import _duration, plan_run
from privquant.pipeline.run import _preflight, prepared_split
from privquant.population import population_jobs
from privquant.population.jobs import job_key

CONFIG = {
    "name": "plan",
    "data": {"name": "digits", "pool_size": 400, "reference_size": 100},
    "model": {"name": "mlp", "options": {"hidden": [64]}},
    "train": {"epochs": 6, "batch_size": 32, "optimizer": "adam", "lr": 0.003, "weight_decay": 0},
    "population": {"n_models": 3},
    "variants": [
        {"name": "fp32", "method": "none"},
        {
            "name": "qat4",
            "method": "qat",
            "epochs": 3,
            "quant": {"weight_bits": 4, "first_last_bits": None},
        },
        {"name": "sd", "steps": [{"method": "split_distill", "teachers": 2}]},
    ],  # fmt: skip
    "attacks": ["loss"],
    "targets": [0],
    "bootstrap": 10,
}


def _by_name(plan) -> tuple[dict, dict]:  # noqa: ANN001
    return {p.train_step: p for p in plan.populations}, {v.name: v for v in plan.variants}


def test_plan_finds_what_a_run_left_and_prices_only_the_rest(tmp_path: Path) -> None:
    config = load_config(CONFIG)
    run = tmp_path / "run"
    before = plan_run(config, run)
    pops, variants = _by_name(before)
    assert pops["plain"].cached == 0 and pops["plain"].models == 3
    assert pops["plain"].variants == ["fp32", "qat4"]
    # split_distill, 2 teachers each on half the members, then the student on all of them
    assert pops["split_distill"].units_per_model == pytest.approx(2.0)
    assert pops["split_distill"].seconds == pytest.approx(2 * pops["plain"].seconds, rel=1e-6)
    assert not any(v.signals_cached for v in variants.values())
    assert variants["qat4"].transforms_to_run == 3 and variants["fp32"].transforms_to_run == 0
    # every model on the pool as is and flipped (queries: 2), the target also on its test rows
    split = prepared_split(config)[1]
    assert variants["fp32"].query_images == 3 * len(split.pool) * 2 + len(split.test)
    assert before.total_seconds > 0 and before.train_images_per_second > 0
    # A defended model lands teacher by teacher, then its student (1 of its 2 units here):
    # the longest of them is what a session's --hours must leave room for.
    sd = pops["split_distill"]
    assert sd.step_seconds == pytest.approx(sd.model_seconds / 2, rel=1e-6)
    assert f"[lands in steps of up to {_duration(sd.step_seconds)}]" in before.text()
    assert "[lands in steps" not in before.text().split("split_distill")[0]  # plain: one step

    run_audit(config, run, progress=False)
    after = plan_run(config, run)
    pops, variants = _by_name(after)
    assert all(p.cached == p.models for p in pops.values())
    assert all(v.signals_cached for v in variants.values())
    assert after.total_seconds == 0

    # A run cut off inside model 0's defense: its sub-teachers are cached, its student is not.
    ds, split = prepared_split(config)
    resolved = _preflight(config, ds)
    cache = ArtifactCache(run / "cache")
    step = config.variants[2].train_step
    job = population_jobs(split, "mlp", resolved.train, config.model.options, step)[0]
    shutil.rmtree(cache.get(job_key(job, ds, cache)))
    (run / "signals" / "sd.json").unlink()
    cut = plan_run(config, run)
    pops, variants = _by_name(cut)
    sd = pops["split_distill"]
    assert (sd.cached, sd.teachers_cached) == (2, 2)
    assert sd.seconds == pytest.approx(cut.plain_model_seconds, rel=1e-6)  # the student only
    assert not variants["sd"].signals_cached and variants["fp32"].signals_cached
    assert variants["qat4"].seconds == 0 and variants["sd"].seconds > 0


def test_plan_command_prints_text_and_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(CONFIG))
    assert main(["plan", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run")]) == 0
    text = capsys.readouterr().out
    assert "split_distill" in text and "total: ~" in text and "img/s" in text
    assert not (tmp_path / "run").exists()  # planning writes nothing
    assert main(["plan", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run"), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [v["name"] for v in plan["variants"]] == ["fp32", "qat4", "sd"]


def test_dp_sgd_is_priced_from_its_own_steps_timed_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # DP-SGD's cost against plain training differs by host (8x where bf16 is fast, ~4x where plain
    # training is fp32 too): the plan times per-example-gradient steps instead of assuming a factor.
    pytest.importorskip("opacus")
    import torch

    from privquant.models import build_model
    from privquant.pipeline import plan as plan_module

    dp = {"method": "dp_sgd", "epsilon": 8, "batch_size": 64, "epochs": 3}
    variants = [{"name": "fp32"}, {"name": "dp", "steps": [dp]},
                {"name": "dp4", "steps": [{**dp, "augment_multiplicity": 4}]},
                {"name": "dp_big", "steps": [{**dp, "batch_size": 160}]}]  # fmt: skip
    config = load_config({**CONFIG, "variants": variants})
    timed = []

    def fake_rate(model, x, y, seconds, per_example):  # noqa: ANN001, ANN202
        timed.append(len(x))
        return 250.0 if len(x) == 64 else 200.0  # per row, a larger batch is slower

    monkeypatch.setattr(plan_module, "dp_gradients_per_second", fake_rate)
    plan = plan_run(config, tmp_path / "run")
    dp1, dp4, big = [p for p in plan.populations if p.train_step == "dp_sgd"]
    # Timed once per DP batch size, at that size (not the recipe's 32): the two at 64 share one.
    assert timed == [64, 160]
    factor = plan.train_images_per_second / 250.0
    assert big.units_per_model == pytest.approx(
        plan.train_images_per_second / 200.0 * 3 / 6, rel=1e-3
    )
    # 3 of the recipe's 6 epochs, at the measured factor
    assert dp1.units_per_model == pytest.approx(factor * 3 / 6, rel=1e-3)
    assert "timed here" in dp1.notes[0]
    # 4 copies of each row: 4 per-example gradients and the overhead measured at multiplicity 4.
    assert dp4.units_per_model == pytest.approx(4 * 1.36 * dp1.units_per_model, rel=1e-3)

    # The real measurement: a BatchNorm model timed as dp_sgd trains it (GroupNorm), weights untouched.
    monkeypatch.undo()
    model = build_model("resnet20", (3, 32, 32), 10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    assert plan_module.dp_gradients_per_second(model, x, y, 0.2) > 0
    assert plan_module.dp_gradients_per_second(model, x, y, 0.2, "expanded_weights") > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_a_pinned_population_is_priced_at_its_own_precision_timed_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A study pinned to bf16 (its carried models trained there) resumed on an AVX2-only host:
    # bf16 trained ResNet-20 at 25 img/s there against fp32's 254; pricing the pinned population
    # at fp32's speed said 13 h for what would take days.
    from privquant.training import precision as precision_module

    speeds = {"fp32": 400.0, "bf16": 40.0}
    timed = []

    def fake_speed(model, x, y, candidate, seconds):  # noqa: ANN001, ANN202
        timed.append(candidate.precision)
        return speeds[candidate.precision]

    monkeypatch.setattr(precision_module, "time_candidate", fake_speed)
    config = load_config({**CONFIG, "train": {**CONFIG["train"], "precision": "fp32"}})
    free = plan_run(config, tmp_path / "free")
    assert "bf16" not in timed
    bf16 = {"precision": "bf16", "channels_last": False}
    pinned = plan_run(config, tmp_path / "pinned", pins={"fp32": bf16})
    assert timed.count("bf16") == 1  # the pinned precision timed once, for all it prices
    pops, free_pops = _by_name(pinned)[0], _by_name(free)[0]
    assert pops["plain"].precision == "bf16" and pops["plain"].train_images_per_second == 40.0
    assert pops["plain"].seconds == pytest.approx(10 * free_pops["plain"].seconds)
    assert pops["split_distill"].seconds == pytest.approx(free_pops["split_distill"].seconds)
    assert any("fp32: pinned to bf16, timed here at 40 img/s (10.0x" in n for n in pinned.notes)
    assert "[trains in bf16: 40 img/s here]" in pinned.text()

    # The pin covers the population's deployments too: qat4's QAT runs in bf16 at bf16's price.
    def deploying(plan, name):  # noqa: ANN001, ANN202
        v = _by_name(plan)[1][name]
        return v.seconds - v.query_images / plan.infer_images_per_second

    assert deploying(free, "qat4") > 0
    assert deploying(pinned, "qat4") == pytest.approx(10 * deploying(free, "qat4"))
    assert deploying(pinned, "sd") == pytest.approx(0, abs=1e-9)
