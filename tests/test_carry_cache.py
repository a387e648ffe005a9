"""Finished models carried to a fresh machine's cache are used, not retrained (issue 25)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import subprocess
import sys
from pathlib import Path

from privquant.pipeline import load_config, run_audit
from privquant.results import AuditResults
from privquant.results.merge import measured

ROOT = Path(__file__).resolve().parents[1]
CONFIG = {
    "name": "carry",
    "data": {"name": "digits", "pool_size": 300, "reference_size": 0, "population_size": 100, "test_size": 200},
    "model": {"name": "mlp", "options": {"hidden": [32]}},
    "train": {"epochs": 4, "batch_size": 32, "optimizer": "adam", "lr": 0.003, "precision": "fp32"},
    "population": {"n_models": 3},
    "variants": [{"name": "fp32"}, {"name": "ls", "steps": [{"method": "label_smoothing", "smoothing": 0.3}]}],
    "attacks": ["loss"],
    "bootstrap": 5,
}  # fmt: skip


def _script():  # noqa: ANN202
    spec = importlib.util.spec_from_file_location(
        "carry_cache", ROOT / "scripts" / "carry_cache.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CARRY = _script()


def _carry(*args: str) -> dict:
    # The script's own main, in this process: a fresh interpreter per call cost ~6 s here (it
    # imports torch); a refused pack below runs it as a program, as a user does.
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert CARRY.main(list(args)) == 0
    return json.loads(out.getvalue())


def test_carried_models_are_found_by_a_fresh_cache(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    first = {**CONFIG, "cache_dir": str(tmp_path / "cache1")}
    run_audit(load_config(first), tmp_path / "run1", progress=False)
    packed = _carry(
        "pack", str(tmp_path / "cache1"), str(tmp_path / "carry.tar.gz"), "--defense", "none"
    )
    assert packed["entries"] == {"none": 3}  # the plain population only, not the label-smoothed one
    assert _carry("unpack", str(tmp_path / "carry.tar.gz"), str(tmp_path / "cache2"))["added"] == 3
    assert (
        _carry("unpack", str(tmp_path / "carry.tar.gz"), str(tmp_path / "cache2"))["already_there"]
        == 3
    )

    import privquant.population.jobs as jobs

    trained: list[object] = []
    real = jobs.train_model
    monkeypatch.setattr(
        jobs, "train_model", lambda step, ctx: trained.append(step) or real(step, ctx)
    )
    run_audit(
        load_config({**CONFIG, "cache_dir": str(tmp_path / "cache2")}),
        tmp_path / "run2",
        progress=False,
    )
    assert len(trained) == 3 and all(s is not None for s in trained)  # only the ls models trained
    a, b = (AuditResults.load(tmp_path / r) for r in ("run1", "run2"))
    for name in a.variants:
        assert measured(a.variants[name].model_dump(mode="json")) == measured(
            b.variants[name].model_dump(mode="json")
        )


def test_carried_teachers_are_not_retrained(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    # A session can end between a model's sub-teachers; --teachers carries the finished ones.
    config = {**CONFIG, "variants": [{"name": "fp32"},
                                     {"name": "sd", "steps": [{"method": "split_distill", "teachers": 2}]}]}  # fmt: skip
    run_audit(
        load_config({**config, "cache_dir": str(tmp_path / "c1")}), tmp_path / "r1", progress=False
    )
    packed = _carry(
        "pack", str(tmp_path / "c1"), str(tmp_path / "t.tar.gz"), "--defense", "none", "--teachers"
    )
    assert packed["entries"] == {"none": 3, "split_distill teachers": 6}  # 3 models x 2 teachers
    listed = _carry("list", str(tmp_path / "t.tar.gz"))  # read without extracting
    assert listed["split_distill teachers"] == 6 and listed["run_files"] == 0
    assert listed["models"]["none"]["count"] == 3 and "split_distill" not in listed["models"]
    assert all(100 <= n <= 200 for n in listed["models"]["none"]["members"])  # ~half of 300
    _carry("unpack", str(tmp_path / "t.tar.gz"), str(tmp_path / "c2"))

    from privquant.defenses.base import DefenseContext

    sizes: list[int] = []
    real = DefenseContext.train_fresh
    monkeypatch.setattr(DefenseContext, "train_fresh",
                        lambda self, *a, **k: sizes.append(len(a[0]) if a else len(self.x)) or real(self, *a, **k))  # fmt: skip
    run_audit(
        load_config({**config, "cache_dir": str(tmp_path / "c2")}), tmp_path / "r2", progress=False
    )
    assert len(sizes) == 3, sizes  # the 3 students, no teacher
    a, b = (AuditResults.load(tmp_path / r) for r in ("r1", "r2"))
    assert measured(a.variants["sd"].model_dump(mode="json")) == measured(
        b.variants["sd"].model_dump(mode="json")
    )


def test_a_parts_carried_signals_are_read_not_requeried(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    # The next part runs on another CPU: FP32's signals travel with its models, so FP32 in both parts
    # is the same to the last digit (what privquant merge asks) without querying the models again.
    # machine.precision lists every decision of the process, here only a wrong one for "mlp" (in
    # a suite, earlier tests left such entries: the carry pinned it and this test flaked, s33).
    import privquant.machine as machine

    decoy = {"model": "mlp", "precision": "bf16", "channels_last": False}
    monkeypatch.setattr(machine, "recorded_choices", lambda: [decoy])
    run_audit(
        load_config({**CONFIG, "cache_dir": str(tmp_path / "c1")}), tmp_path / "r1", progress=False
    )
    packed = _carry("pack", str(tmp_path / "c1"), str(tmp_path / "p.tar.gz"), "--defense", "none",
                    "--run", str(tmp_path / "r1"))  # fmt: skip
    assert packed["run_files"] == ["signals/fp32.npz", "signals/fp32.json", "attacks/fp32.json"]
    unpacked = _carry(
        "unpack", str(tmp_path / "p.tar.gz"), str(tmp_path / "c2"), "--run", str(tmp_path / "r2")
    )
    assert unpacked["added"] == 3 and len(unpacked["run_files"]) == 3

    import privquant.pipeline.run as run

    queried: list[int] = []
    real = run.query_one
    monkeypatch.setattr(
        run,
        "query_one",
        lambda job, *a, **k: queried.append(job.deploy.index) or real(job, *a, **k),
    )
    part2 = {**CONFIG, "cache_dir": str(tmp_path / "c2"),
             "variants": [{"name": "fp32"}, {"name": "ls2", "steps": [{"method": "label_smoothing", "smoothing": 0.1}]}]}  # fmt: skip
    run_audit(load_config(part2), tmp_path / "r2", progress=False)
    assert sorted(queried) == [0, 1, 2]  # the new variant's models only
    a, b = (AuditResults.load(tmp_path / r) for r in ("r1", "r2"))
    assert measured(a.variants["fp32"].model_dump(mode="json")) == measured(
        b.variants["fp32"].model_dump(mode="json")
    )
    missing = subprocess.run([sys.executable, str(ROOT / "scripts" / "carry_cache.py"), "pack", str(tmp_path / "c1"),
                              str(tmp_path / "q.tar.gz"), "--run", str(tmp_path / "r1"), "--variants", "nope"],
                             capture_output=True, text=True)  # fmt: skip
    assert (
        missing.returncode != 0
        and "variant nope" in missing.stderr
        and not (tmp_path / "q.tar.gz").exists()
    )


def test_dp_models_trained_in_sessions_are_found_whatever_auto_chose(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    # DP-SGD trains in fp32 whatever the recipe resolved to, so its models are keyed so: a model
    # trained where auto chose bf16 is found where auto chooses fp32. --train-only fills the cache
    # with one variant's models and audits nothing.
    import pytest

    pytest.importorskip("opacus")
    import privquant.population.jobs as jobs
    from privquant.errors import ConfigError
    from privquant.pipeline.run import train_only

    dp = {"name": "dp", "steps": [{"method": "dp_sgd", "noise_multiplier": 0.5, "batch_size": 32}]}
    config = {**CONFIG, "cache_dir": str(tmp_path / "cache"), "variants": [{"name": "fp32"}, dp]}
    trained: list[object] = []
    real = jobs.train_model
    monkeypatch.setattr(
        jobs, "train_model", lambda step, ctx: trained.append(step) or real(step, ctx)
    )
    bf16_host = {**config, "train": {**CONFIG["train"], "precision": "bf16", "channels_last": True}}
    folders = train_only(load_config(bf16_host), tmp_path / "run", ["dp"], progress=False)
    assert list(folders) == ["dp"] and len(folders["dp"]) == 3 and len(trained) == 3
    assert not (tmp_path / "run" / "results.json").exists()
    trained.clear()
    results = run_audit(load_config(config), tmp_path / "run", progress=False)  # fp32 host
    assert len(trained) == 3 and all(s is None for s in trained)  # the plain models only
    assert set(results.variants) == {"fp32", "dp"}
    with pytest.raises(ConfigError, match="variants: nope not in the config"):
        train_only(load_config(config), tmp_path / "run", ["nope"], progress=False)


def test_dp_train_ignores_the_recipes_precision() -> None:
    # What keying DP models with fp32 (DPSGD.fixed_precision) rests on.
    import pytest
    import torch

    pytest.importorskip("opacus")
    from privquant.data import load_dataset
    from privquant.defenses import DefenseContext
    from privquant.defenses.dp_sgd import DPSGD, dp_train
    from privquant.pipeline.run import population_train
    from privquant.population import model_factory
    from privquant.training import TrainConfig

    ds = load_dataset("digits")
    weights = []
    for precision, layout in (("bf16", True), ("fp32", False)):
        train = TrainConfig(epochs=2, batch_size=32, optimizer="adam", lr=3e-3, precision=precision,
                            channels_last=layout)  # fmt: skip
        ctx = DefenseContext(x=ds.x_train[:200], y=ds.y_train[:200], x_reference=None, y_reference=None,
                             num_classes=10, train=train, seed=0,
                             model_fn=model_factory("mlp", 10, {"hidden": [32]}))  # fmt: skip
        model, _ = dp_train(DPSGD(noise_multiplier=0.5), ctx)
        weights.append(model.state_dict())
        fixed = population_train(train, DPSGD(noise_multiplier=0.5))
        assert fixed.model_dump(include=set(DPSGD.fixed_precision)) == DPSGD.fixed_precision
    for a, b in zip(*(w.values() for w in weights), strict=True):
        assert torch.equal(a, b)


def test_a_time_budget_stops_between_models_never_inside_one(monkeypatch) -> None:  # noqa: ANN001
    import pytest

    import privquant.pipeline.budget as budget
    from privquant.population import LocalExecutor

    clock = [0.0]
    monkeypatch.setattr(budget.time, "monotonic", lambda: clock[0])

    def train(seconds: float) -> float:  # a model that takes ``seconds``; 0: found in the cache
        clock[0] += seconds
        return seconds

    ex = budget.BudgetExecutor(LocalExecutor(), seconds=10)
    assert ex.map(train, [0, 0, 3], progress=False) == [0, 0, 3]  # cached models cost nothing
    with pytest.raises(
        budget.BudgetReached, match="after 5 jobs in this call, 1 of this population"
    ) as e:
        ex.map(train, [3, 3, 3], progress=False)  # 9 s used, 1 s left: the 3-s model does not start
    assert (e.value.done, e.value.remaining, clock[0]) == (5, 1, 9.0)
    rounds = budget.BudgetExecutor(LocalExecutor(), seconds=100, round_size=2)
    assert rounds.map(train, [1, 2, 3], progress=False) == [1, 2, 3] and rounds.slowest == 3
    with pytest.raises(budget.PrivquantError, match="expected a positive time"):
        budget.BudgetExecutor(LocalExecutor(), seconds=0)


def test_train_only_within_a_budget(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    import pytest

    import privquant.population.jobs as jobs
    from privquant.pipeline.budget import BudgetReached
    from privquant.pipeline.run import train_only

    trained: list[object] = []
    real = jobs.train_model
    monkeypatch.setattr(
        jobs, "train_model", lambda step, ctx: trained.append(step) or real(step, ctx)
    )
    config = load_config({**CONFIG, "cache_dir": str(tmp_path / "cache")})
    with pytest.raises(BudgetReached, match="after 0 jobs"):  # spent before the first model
        train_only(config, tmp_path / "run", ["fp32"], progress=False, hours=1e-9)
    assert trained == []
    folders = train_only(config, tmp_path / "run", ["fp32"], progress=False, hours=1.0)
    assert len(folders["fp32"]) == 3 and len(trained) == 3 and "ls" not in folders


def test_a_pinned_precision_finds_and_reads_models_carried_from_a_bf16_host(
    tmp_path, monkeypatch
) -> None:  # noqa: ANN001
    # Part 1 ran where auto chose bf16; part 2 runs where auto chooses fp32. The carry pins FP32's
    # population to bf16, so part 2 neither retrains nor re-queries it, and trains its own
    # variant in this host's fp32. Without the pin the same host retrains FP32.
    import privquant.pipeline.run as run
    import privquant.population.jobs as jobs

    bf16_pin = {"precision": "bf16", "channels_last": False}
    host_a = {
        **CONFIG,
        "cache_dir": str(tmp_path / "c1"),
        "train": {**CONFIG["train"], "precision": "bf16"},
    }
    run_audit(load_config(host_a), tmp_path / "r1", progress=False, pins={"fp32": bf16_pin})
    packed = _carry("pack", str(tmp_path / "c1"), str(tmp_path / "p.tar.gz"), "--defense", "none",
                    "--run", str(tmp_path / "r1"))  # fmt: skip
    assert packed["precision_pins"] == {"fp32": bf16_pin}
    unpacked = _carry(
        "unpack", str(tmp_path / "p.tar.gz"), str(tmp_path / "c2"), "--run", str(tmp_path / "r2")
    )
    assert unpacked["precision_pins"] == {"fp32": bf16_pin}
    assert json.loads((tmp_path / "r2" / "precision.json").read_text()) == {"fp32": bf16_pin}

    trained: list[tuple[object, str]] = []
    queried: list[int] = []
    real_train, real_query = jobs.train_model, run.query_one
    monkeypatch.setattr(jobs, "train_model",
                        lambda step, ctx: trained.append((step, ctx.train.precision)) or real_train(step, ctx))  # fmt: skip
    monkeypatch.setattr(run, "query_one",
                        lambda job, *a, **k: queried.append(job.deploy.index) or real_query(job, *a, **k))  # fmt: skip
    ls2 = {"name": "ls2", "steps": [{"method": "label_smoothing", "smoothing": 0.1}]}
    host_b = {**CONFIG, "cache_dir": str(tmp_path / "c2"), "variants": [{"name": "fp32"}, ls2]}
    results = run_audit(load_config(host_b), tmp_path / "r2", progress=False)  # pins from r2
    assert [p for _, p in trained] == ["fp32"] * 3 and all(s is not None for s, _ in trained)
    assert sorted(queried) == [0, 1, 2]  # ls2's models; FP32's signals were carried
    assert results.machine["precision_pins"] == {"fp32": bf16_pin}
    a = AuditResults.load(tmp_path / "r1")
    assert measured(a.variants["fp32"].model_dump(mode="json")) == measured(
        results.variants["fp32"].model_dump(mode="json")
    )
    trained.clear()
    run_audit(load_config(host_b), tmp_path / "r3", progress=False)  # no pins: FP32 retrains here
    assert sum(s is None for s, _ in trained) == 3


def test_precision_pins_are_checked_against_the_config(tmp_path) -> None:  # noqa: ANN001
    import pytest

    from privquant.cli import main
    from privquant.errors import ConfigError
    from privquant.pipeline.pins import parse_pin, pinned_config, resolve_pins, save_pins

    assert parse_pin("fp32=bf16+channels_last") == (
        "fp32",
        {"precision": "bf16", "channels_last": True},
    )
    for bad in ("fp32", "fp32=fp16", "=bf16", "fp32=bf16+nhwc"):
        with pytest.raises(ConfigError, match="VARIANT=PRECISION"):
            parse_pin(bad)
    dp = {"name": "dp", "steps": [{"method": "dp_sgd", "noise_multiplier": 0.5}]}
    ls = {"name": "ls", "steps": [{"method": "label_smoothing", "smoothing": 0.3}]}
    ls_q = {"name": "ls_q", "steps": [{"method": "label_smoothing", "smoothing": 0.3},
                                      {"method": "ptq", "quant": {"weight_bits": 4}}]}  # fmt: skip
    config = load_config({**CONFIG, "variants": [{"name": "fp32"}, ls, ls_q, dp]})
    pin = {"precision": "bf16", "channels_last": False}
    with pytest.raises(ConfigError, match="does not have"):
        resolve_pins(config, tmp_path, {"nope": pin})
    with pytest.raises(ConfigError, match="always trains in fp32"):
        resolve_pins(config, tmp_path, {"dp": pin})
    with pytest.raises(ConfigError, match="share their models"):
        resolve_pins(config, tmp_path, {"ls": pin, "ls_q": {**pin, "precision": "fp32"}})
    save_pins(tmp_path, {"ls": pin})
    with pytest.raises(ConfigError, match="already pinned"):
        resolve_pins(config, tmp_path, {"ls": {**pin, "precision": "fp32"}})
    pins = resolve_pins(config, tmp_path, {"fp32": pin})
    assert pins == {"ls": pin, "fp32": pin}
    # A pin covers every variant built on the pinned population, and nothing else.
    by_name = {v.name: v for v in config.variants}
    assert pinned_config(config, by_name["ls_q"], pins).train.precision == "bf16"
    assert pinned_config(config, by_name["dp"], pins) is config
    (tmp_path / "precision.json").write_text('{"ls": {"precision": "fp16"}}')
    with pytest.raises(ConfigError, match="precision.json: ls: expected"):
        resolve_pins(config, tmp_path)
    assert main(["plan", "cfg.yaml", "--out", str(tmp_path), "--pin-precision", "fp32=fp8"]) == 2


def test_a_finished_parts_auto_decision_travels_as_its_pin(tmp_path) -> None:  # noqa: ANN001
    # A part that ran without pins (size 3's part 1) recorded what auto chose in results.json.
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "carry_cache", ROOT / "scripts" / "carry_cache.py"
    )
    carry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(carry)
    decision = {
        "precision": "bf16",
        "channels_last": True,
        "source": "measured",
        "model": "resnet20",
    }
    other = {**decision, "precision": "fp32", "model": "mlp"}  # another model's decision: ignored
    done = {"config": {"model": {"name": "resnet20"}}, "machine": {"precision": [other, decision]}}
    (tmp_path / "results.json").write_text(json.dumps(done))
    pin = {"precision": "bf16", "channels_last": True}
    assert carry._run_pins(tmp_path, ["fp32", "qat4"]) == {"fp32": pin, "qat4": pin}
    (tmp_path / "precision.json").write_text(json.dumps({"fp32": {**pin, "precision": "fp32"}}))
    assert carry._run_pins(tmp_path, ["fp32"]) == {
        "fp32": {**pin, "precision": "fp32"}
    }  # its own pin wins
    # A variant built on a pinned variant's population carries that pin, not auto's decision.
    ls = [{"method": "label_smoothing", "smoothing": 0.3}]
    done["variants"] = {"fp32": {"steps": []}, "ls": {"steps": ls},
                        "ls_q": {"steps": [*ls, {"method": "ptq", "quant": {"weight_bits": 4}}]}}  # fmt: skip
    (tmp_path / "results.json").write_text(json.dumps(done))
    fp32_pin = {**pin, "precision": "fp32"}
    (tmp_path / "precision.json").write_text(json.dumps({"ls": fp32_pin}))
    assert carry._run_pins(tmp_path, ["fp32", "ls_q"]) == {"fp32": pin, "ls_q": fp32_pin}
    (tmp_path / "results.json").unlink()
    assert carry._run_pins(tmp_path, ["fp32", "ls"]) == {"ls": fp32_pin}  # its pins, no results
    (tmp_path / "precision.json").unlink()
    assert carry._run_pins(tmp_path, ["fp32"]) == {}  # no audit finished: nothing to say


def test_train_only_starts_no_model_priced_over_its_budget(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    # The first model is priced from training steps timed here (1 img/s: a bf16 pin where bf16 is
    # emulated, scaled down) before anything runs: 30 s of budget do not start it.
    import pytest

    import privquant.population.jobs as jobs
    from privquant.pipeline.budget import BudgetReached
    from privquant.pipeline.run import train_only
    from privquant.training import precision

    trained: list[object] = []
    monkeypatch.setattr(jobs, "train_model", lambda step, ctx: trained.append(step))
    monkeypatch.setattr(precision, "time_candidate", lambda *a, **k: 1.0)
    config = load_config({**CONFIG, "cache_dir": str(tmp_path / "cache")})
    priced = r"the next step is estimated at [0-9.]+ (min|h) here \(fp32\S* timed at 1 img/s\)"
    with pytest.raises(BudgetReached, match=priced):
        train_only(config, tmp_path / "run", ["fp32"], progress=False, hours=30 / 3600)
    assert trained == []


def test_a_bf16_pin_warns_where_this_cpu_has_no_fast_bf16(tmp_path, monkeypatch, capsys) -> None:  # noqa: ANN001
    # Session 30's host (AVX2 only) trained bf16 ResNet-20 at 21-36 img/s against fp32's 319-342:
    # a carried bf16 population's missing models would train 10x+ slower there, silently.
    import privquant.training.device as device
    from privquant.pipeline.pins import slow_pin_warnings
    from privquant.pipeline.run import train_only

    bf16 = {"precision": "bf16", "channels_last": True}
    pins = {"fp32": bf16, "ls": {"precision": "fp32", "channels_last": True}}
    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: True)
    assert slow_pin_warnings(pins) == []
    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: False)
    (warning,) = slow_pin_warnings(pins)
    assert warning.startswith("fp32: pinned to bf16, which this CPU has no fast kernels for")
    config = load_config({**CONFIG, "cache_dir": str(tmp_path / "cache")})
    train_only(config, tmp_path / "run", ["ls"], progress=False, pins={"fp32": bf16})
    assert "privquant: warning: fp32: pinned to bf16" in capsys.readouterr().err
