from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_reports_every_metric
from privquant.cli import main
from privquant.errors import ConfigError
from privquant.pipeline import VariantConfig, audit_model, load_config, run_audit
from privquant.quant import QuantConfig
from privquant.results import AuditResults
from privquant.training import TrainConfig

TINY = {
    "name": "tiny",
    "data": {"name": "digits", "pool_size": 600, "reference_size": 200},
    "model": {"name": "mlp", "options": {"hidden": [256, 256]}},
    "train": {"epochs": 40, "batch_size": 32, "optimizer": "adam", "lr": 0.003, "weight_decay": 0},
    "population": {"n_models": 4, "queries": 2},
    "variants": [
        {"name": "fp32", "method": "none"},
        {"name": "ptq4", "method": "ptq", "quant": {"weight_bits": 4, "first_last_bits": None}},
        {
            "name": "qat2",
            "method": "qat",
            "quant": {"weight_bits": 2, "first_last_bits": None},
            "epochs": 2,
        },
    ],
    "attacks": ["loss", "lira_online_fixed_var", "label_only_correctness"],
    "targets": [0, 1],
    "naive": True,
    "bootstrap": 30,
}


@pytest.mark.parametrize("patch,message", [
    ({"model": {"name": "vgg"}}, "model.name: Value error, unknown model 'vgg'; choose one of ['mlp', 'small_cnn'"),
    ({"trian": {}}, "trian: Extra inputs are not permitted"),
    ({"variants": [{"name": "q", "method": "ptq", "quant": {"weight_bits": 4}}]}, "must include {name: fp32"),
    ({"variants": [{"name": "fp32"}, {"name": "q", "method": "ptq"}]}, "variants.1.steps.0.quant: Field required"),
    ({"variants": [{"name": "fp32"}, {"name": "q", "method": "ptq", "quant": {"weight_bits": 5.5}}]},
     "variants.1.steps.0.quant.weight_bits"),
    ({"variants": [{"name": "fp32"}, {"name": "q", "method": "prune"}]}, "does not match any of the expected tags"),
    ({"variants": [{"name": "fp32", "method": "none", "quant": {}}]}, "method 'none' takes no other fields"),
    ({"variants": [{"name": "fp32"}, {"name": "q", "steps": [{"method": "output_coarsening"},
                                                         {"method": "ptq", "quant": {}}]}]},
     "steps must run train -> transform -> output"),
    ({"variants": [{"name": "fp32"}, {"name": "q", "steps": [{"method": "qat", "quant": {}, "epoch": 3}]}]},
     "variants.1.steps.0.epoch: Extra inputs are not permitted"),
    ({"attacks": ["lira", "loss"]}, "unknown attack 'lira'"),
    ({"targets": [7]}, "targets: [7] outside 0..3"),
    ({"train": {"epochs": 0}}, "train.epochs: Input should be greater than or equal to 1"),
])  # fmt: skip
def test_invalid_configs_name_the_field(patch: dict, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config({**TINY, **patch})
    assert message in str(e.value)


def test_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "none.yaml")
    (tmp_path / "bad.yaml").write_text("data: [unclosed")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(tmp_path / "bad.yaml")


def test_shorthand_and_steps_forms_are_the_same_variant() -> None:
    short = VariantConfig.model_validate(
        {"name": "q", "method": "qat", "quant": {"weight_bits": 2}, "epochs": 3}
    )
    full = VariantConfig.model_validate({"name": "q", "steps": [{"method": "qat", "quant": {"weight_bits": 2},
                                                                   "epochs": 3}]})  # fmt: skip
    assert short == full and short.steps[0].epochs == 3 and short.describe() == "qat"
    # A dumped variant validates back to itself (results.json and the config cache key rely on it).
    assert VariantConfig.model_validate(full.model_dump()) == full


def _metrics(results: AuditResults) -> dict:
    return {(v, a): e.mean for v, var in results.variants.items() for a, e in var.attacks.items()}


def _comparable(path: Path) -> dict:
    """results.json without what legitimately differs between two runs (time and machine)."""
    data = json.loads(path.read_text())
    data.pop("timings_seconds")
    data.pop("machine")
    for v in data["variants"].values():
        for attacks in (v["attacks"], v.get("attacks_naive_fp32_shadows") or {}):
            for a in attacks.values():
                for t in a["per_target"].values():
                    t.pop("seconds")  # attack wall time
    return data


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("finished") / "run"
    run_audit(load_config(TINY), run, progress=False)
    return run


@pytest.mark.slow
def test_interrupted_run_resumes_without_retraining_and_matches_a_fresh_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, finished_run: Path
) -> None:
    import privquant.population.jobs as jobs
    import privquant.population.query as run_module

    real_deploy, calls = run_module.deploy_one, {"n": 0}

    def flaky_deploy(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls["n"] += 1
        if calls["n"] == 6:  # while quantizing the models of the second variant
            raise KeyboardInterrupt
        return real_deploy(*args, **kwargs)

    monkeypatch.setattr(run_module, "deploy_one", flaky_deploy)
    with pytest.raises(KeyboardInterrupt):
        run_audit(load_config(TINY), tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "results.json").exists()
    monkeypatch.setattr(run_module, "deploy_one", real_deploy)

    trained = {"n": 0}
    real_train = jobs.train_model

    def counting_train(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        trained["n"] += 1
        return real_train(*args, **kwargs)

    monkeypatch.setattr(jobs, "train_model", counting_train)
    run_audit(load_config(TINY), tmp_path / "run", progress=False)
    assert trained["n"] == 0
    # Every number of results.json (timings and machine aside) equals an uninterrupted run's.
    assert _comparable(tmp_path / "run" / "results.json") == _comparable(
        finished_run / "results.json"
    )


def test_results_json_is_typed_complete_and_consistent(finished_run: Path) -> None:
    results = AuditResults.load(finished_run)
    assert results.format == "privquant-results/2"
    assert list(results.variants) == ["fp32", "ptq4", "qat2"]  # the config's order
    fp, q2 = results.variants["fp32"], results.variants["qat2"]
    assert fp.steps == [] and q2.steps[0]["method"] == "qat" and q2.description == "qat"
    assert (
        fp.bits == 32
        and q2.bits == pytest.approx(2, abs=0.1)
        and q2.size_bytes < fp.size_bytes / 10
    )
    assert fp.train_accuracy > fp.test_accuracy > 0.8  # the targets overfit
    assert len(fp.per_model) == 4 and fp.per_model[3].test_accuracy is None  # not a target
    loss = fp.attacks["loss"]
    assert loss.mean["auc"] > 0.55
    assert_reports_every_metric(loss.per_target["0"])
    assert loss.mean["auc"] == pytest.approx(
        np.mean([loss.per_target[t]["auc"] for t in ("0", "1")])
    )
    assert q2.attacks_naive_fp32_shadows is not None and fp.attacks_naive_fp32_shadows is None
    rel = q2.relative_change_vs_fp32["loss"]["auc"]
    assert rel == pytest.approx(
        (loss.mean["auc"] - q2.attacks["loss"].mean["auc"]) / loss.mean["auc"]
    )
    assert results.timings_seconds["total"] > 0 and results.machine["torch"]
    # Where the models trained, from their checkpoints: one population of 4 (the variants all
    # transform it), counted once.
    import torch

    from privquant.machine import training_device

    here = training_device(torch.device("cpu"))
    assert fp.per_model[0].trained_on == here and results.machine["trained_on"] == {here: 4}
    # Queried in the layout timed faster here, one decision for every model of the shape.
    assert len({m.query_layout for m in fp.per_model}) == 1
    assert fp.per_model[0].query_layout in ("nchw", "channels_last")


def test_quantized_shadows_change_under_the_variant(finished_run: Path) -> None:
    """The adaptive attacker: every model (not only the target) is quantized for a variant."""
    from privquant.signals import Signals

    fp = Signals.load(finished_run / "signals" / "fp32.npz")
    q2 = Signals.load(finished_run / "signals" / "qat2.npz")
    for m in range(fp.n_models):
        assert not np.allclose(fp.logits[m], q2.logits[m]), m


def test_report_rerenders_from_results_json(finished_run: Path, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(finished_run, run)
    for f in ("report.md", "report.html"):
        (run / f).unlink()
    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    assert (
        "data:image/png;base64," in page
        and "qat2 (attacker with a miscalibrated threshold (FP32 shadows))" in page
    )
    assert "ROC (log-log): lira_online_fixed_var" in (run / "report.md").read_text()


@pytest.mark.slow
def test_edited_config_never_reuses_stale_signals(finished_run: Path, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(finished_run, run)
    edited = json.loads(json.dumps(TINY))
    edited["variants"][1]["quant"]["weight_bits"] = 3
    again = run_audit(load_config(edited), run, progress=False)
    assert again.variants["ptq4"].bits == pytest.approx(3, abs=0.1)
    assert (
        _metrics(again)[("fp32", "loss")]
        == _metrics(AuditResults.load(finished_run))[("fp32", "loss")]
    )


def test_report_rejects_foreign_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "results.json").write_text("{}")
    assert main(["report", str(tmp_path)]) == 2
    assert "unknown format" in capsys.readouterr().err


@pytest.mark.slow
def test_bring_your_own_model() -> None:
    from privquant.data import load_dataset
    from privquant.models import build_model
    from privquant.training import train_new_model

    ds = load_dataset("digits")
    cfg = TrainConfig(epochs=40, batch_size=32, optimizer="adam", lr=3e-3, weight_decay=0)
    xm, ym, xn, yn = ds.x_train[:300], ds.y_train[:300], ds.x_train[300:600], ds.y_train[300:600]
    model, _ = train_new_model("mlp", xm, ym, 10, cfg, progress=False, hidden=(256, 256))
    res = audit_model(
        model, (xm, ym), (xn, yn), lambda: build_model("mlp", [1, 8, 8], 10, hidden=(256, 256)), cfg, n_shadows=3,
        variants=[VariantConfig(name="fp32"), VariantConfig(name="ptq3", method="ptq", quant=QuantConfig(weight_bits=3))],
        attacks=["loss", "lira_online_fixed_var"], test=(ds.x_test, ds.y_test), n_bootstrap=0, progress=False,
    )  # fmt: skip
    assert set(res.variants) == {"fp32", "ptq3"}
    assert res.variants["fp32"].attacks["loss"].mean["auc"] > 0.55
    assert res.variants["ptq3"].size_bytes < res.variants["fp32"].size_bytes
    assert 3 < res.variants["ptq3"].bits < 5  # 3-bit body, 8-bit first and last layers
    assert 0.8 < res.variants["fp32"].test_accuracy <= 1
    # The target is the user's own model: its row of the keep matrix is the given membership.
    assert res.split["members_per_model"][0] == 300


@pytest.mark.slow
def test_population_block_noise_attack_and_findings(tmp_path: Path) -> None:
    from privquant.signals import Signals

    cfg = {**TINY, "data": {**TINY["data"], "population_size": 150}, "naive": False,
           "population": {"n_models": 4, "queries": 4, "query_shift": 2, "noise_queries": 8},
           "variants": [{"name": "fp32"}], "attacks": ["loss", "rmia_online", "label_only_noise"]}  # fmt: skip
    res = run_audit(load_config(cfg), tmp_path / "run", progress=False)
    s = Signals.load(tmp_path / "run" / "signals" / "fp32.npz")
    assert s.n_queries == 4 and s.population_logits.shape == (4, 150, 4, 10)
    assert s.extras["noise_robustness"].shape == (4, 600)
    robust = s.extras["noise_robustness"]
    assert robust[s.keep].mean() > robust[~s.keep].mean()  # members survive more noise
    fp = res.variants["fp32"]
    assert fp.attacks["label_only_noise"].mean["auc"] > 0.5
    assert res.split["population_size"] == 150
    # Findings: the strongest attack on FP32, its top points in score order, with thumbnails.
    f = res.findings
    assert f is not None and f.attack == res.headline_attack() and f.variant == "fp32"
    scores = [p["score"] for p in f.points]
    assert scores == sorted(scores, reverse=True) and len(scores) == 16
    assert (tmp_path / "run" / f.image).is_file()
    assert "Most vulnerable points" in (tmp_path / "run" / "report.md").read_text()
    eps = fp.attacks["loss"].per_target["0"]["epsilon"]
    assert {"decision", "fpr@1%", "fpr@0.1%"} <= set(eps) and fp.attacks["loss"].mean[
        "epsilon_lower_bound"
    ] >= 0


def test_headline_is_the_strongest_attack_on_fp32(finished_run: Path) -> None:
    results = AuditResults.load(finished_run)
    fp = results.variants["fp32"].attacks
    best = max(fp, key=lambda a: (fp[a].mean["tpr@1%fpr"], fp[a].mean["auc"]))
    assert results.headline_attack() == best


@pytest.mark.parametrize("patch,message", [
    ({"variants": [{"name": "fp32"}, {"name": "../../x", "method": "ptq", "quant": {}}]}, "variants.1.name: String should match pattern"),
    ({"targets": []}, "targets: give at least one model index"),
    ({"attacks": []}, "attacks: give at least one attack name"),
    ({"data": {"name": "digits", "test_size": 0}}, "data.test_size: Input should be greater than or equal to 1"),
    ({"attacks": ["label_only_noise"]}, "label_only_noise needs population.noise_queries > 0"),
    ({"population": {"n_models": 3, "balanced": True}}, "population.balanced: needs n_models >= 4"),
])  # fmt: skip
def test_configs_that_would_fail_late_fail_at_validation(patch: dict, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config({**TINY, **patch})
    assert message in str(e.value)


@pytest.mark.parametrize("patch,message", [
    ({"model": {"name": "mlp", "options": {"bogus": 1}}}, "model.options: mlp rejected"),
    ({"train": {**TINY["train"], "device": "cuda"}}, "train.device"),
    ({"variants": [{"name": "fp32", "method": "none"},
                   {"name": "q", "method": "ptq", "quant": {"weight_bits": 4, "layer_bits": {"nope": 2}}}]},
     "variants.q.steps.0.quant.layer_bits: unknown layers"),
])  # fmt: skip
def test_a_failing_rerun_leaves_a_finished_run_untouched(patch: dict, message: str, finished_run: Path,
                                                         tmp_path: Path) -> None:  # fmt: skip
    import shutil

    import torch

    if "device" in patch.get("train", {}) and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    run = tmp_path / "run"
    shutil.copytree(finished_run, run, ignore=shutil.ignore_patterns("cache"))
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(ConfigError, match=message):
        run_audit(load_config({**TINY, **patch}), run, progress=False)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    with pytest.raises(ConfigError, match=message):  # a new folder is not even created
        run_audit(load_config({**TINY, **patch}), tmp_path / "new", progress=False)
    assert not (tmp_path / "new").exists()


def test_a_truncated_signals_file_is_recomputed(finished_run: Path, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(finished_run, run)
    from privquant.signals import Signals

    sig = run / "signals" / "ptq4.npz"
    logits = Signals.load(sig).logits
    data = sig.read_bytes()
    sig.write_bytes(data[: len(data) // 3])  # as a full disk or a kill mid-copy would leave it
    again = run_audit(load_config(TINY), run, progress=False)
    np.testing.assert_array_equal(Signals.load(sig).logits, logits)
    assert _metrics(again) == _metrics(AuditResults.load(finished_run))


USER_MODEL = """
from torch import nn
from privquant.models import register_model


@register_model("plugin_mlp", images_only=False)
def plugin_mlp(shape, num_classes, **options):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, {hidden}), nn.ReLU(), nn.Linear({hidden}, num_classes))
"""


@pytest.mark.slow
def test_user_model_plugin_and_population_from_the_test_part(tmp_path: Path) -> None:
    import yaml

    from privquant.artifacts import ArtifactCache, load_checkpoint
    from privquant.data import load_dataset
    from privquant.membership import MembershipSplit
    from privquant.models import model_code
    from privquant.population import train_population
    from privquant.signals import Signals, query_logits, query_views

    (tmp_path / "cfg").mkdir()
    plugin = tmp_path / "cfg" / "my_model.py"
    plugin.write_text(USER_MODEL.format(hidden=128))
    cfg = {**TINY, "plugins": ["my_model.py"], "model": {"name": "plugin_mlp"}, "naive": False,
           "data": {"name": "digits", "pool_size": 1000, "reference_size": 0,
                    "population_size": 200, "population_source": "test"},
           "variants": [{"name": "fp32"}], "attacks": ["rmia"], "targets": [0]}  # fmt: skip
    (tmp_path / "cfg" / "config.yaml").write_text(yaml.safe_dump(cfg))
    config = load_config(tmp_path / "cfg" / "config.yaml")  # the plugin is found next to it
    res = run_audit(config, tmp_path / "run", progress=False)
    assert res.variants["fp32"].attacks["rmia"].mean["auc"] > 0.55  # 1 OUT reference per point
    split = MembershipSplit.load(tmp_path / "run" / "split.npz")
    assert split.population_part == "test"
    # The population block holds the models' outputs on exactly those test rows, with their labels.
    ds = load_dataset("digits")
    signals = Signals.load(tmp_path / "run" / "signals" / "fp32.npz")
    assert np.array_equal(signals.population_labels, ds.y_test[split.population])
    checkpoints = train_population(ds, split, "plugin_mlp", config.train,
                                   ArtifactCache(tmp_path / "run" / "cache"), progress=False)  # fmt: skip
    model, _ = load_checkpoint(checkpoints[0])
    views = query_views(ds.kind, config.population.queries, config.population.query_shift)
    expected = query_logits(model, ds.x_test[split.population], views)
    np.testing.assert_allclose(signals.population_logits[0], expected, atol=1e-4)
    # Editing the plugin's file changes what its trained models are cached under.
    before = model_code("plugin_mlp")
    plugin.write_text(USER_MODEL.format(hidden=64))
    assert model_code("plugin_mlp") != before


def test_missing_or_broken_plugin_names_the_entry(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"plugins\[0\]: no Python file at"):
        load_config({**TINY, "plugins": ["nowhere.py"]})
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ConfigError, match=r"plugins\[0\]: .*broken.py failed to import.*boom"):
        load_config({**TINY, "plugins": [str(tmp_path / "broken.py")]})
    (tmp_path / "empty.py").write_text("")
    with pytest.raises(ConfigError, match="Ray workers do not import config plugins"):
        load_config({**TINY, "plugins": [str(tmp_path / "empty.py")], "executor": {"kind": "ray"}})


def test_a_rerun_with_another_config_that_fails_restores_the_finished_run(
    finished_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Results, reports, config and split of the last complete run stay until a new set is
    complete; a failure after work started (here: in the attack stage) puts them back."""
    import shutil

    from privquant.pipeline import run as run_module

    run = tmp_path / "run"
    shutil.copytree(finished_run, run, ignore=shutil.ignore_patterns("cache"))
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}

    def broken(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("attack stage failed")

    monkeypatch.setattr(run_module, "_attack_variant", broken)
    other = {**TINY, "bootstrap": 31, "cache_dir": str(finished_run / "cache")}
    with pytest.raises(RuntimeError, match="attack stage failed"):
        run_audit(load_config(other), run, progress=False)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    assert not (run / ".previous").exists() and not (run / ".lock").exists()


def test_one_run_at_a_time_per_folder_and_the_users_config_is_never_overwritten(
    tmp_path: Path,
) -> None:
    import os

    import yaml

    from privquant.pipeline.run import RunLock

    run = tmp_path / "exp"
    run.mkdir()
    (run / ".lock").write_text(
        json.dumps({"pid": os.getpid(), "host": __import__("socket").gethostname()})
    )
    with pytest.raises(
        ConfigError, match=r"another privquant run \(pid \d+ on .*\) is writing this folder"
    ):
        run_audit(load_config(TINY), run, progress=False)
    # A lock left by a killed run (its process is gone) is taken over.
    (run / ".lock").write_text(
        json.dumps({"pid": 2**22 + 12345, "host": __import__("socket").gethostname()})
    )
    with RunLock(run):
        assert json.loads((run / ".lock").read_text())["pid"] == os.getpid()
    assert not (run / ".lock").exists()
    # privquant run exp/config.yaml --out exp: the commented file stays as the user wrote it.
    small = {**TINY, "train": {**TINY["train"], "epochs": 2}, "bootstrap": 5, "naive": False}
    text = "# my notes\n" + yaml.safe_dump(small)
    (run / "config.yaml").write_text(text)
    run_audit(load_config(run / "config.yaml"), run, progress=False)
    assert (run / "config.yaml").read_text() == text
    assert load_config(run / "config.normalized.yaml").bootstrap == 5
    assert (run / "results.json").is_file()


def test_audit_model_cross_checks_its_inputs() -> None:
    from torch import nn

    from privquant.data import load_dataset
    from privquant.errors import PrivquantError
    from privquant.models import build_model
    from privquant.training import train_new_model

    ds = load_dataset("digits")
    cfg = TrainConfig(epochs=3, batch_size=32, optimizer="adam", lr=3e-3, weight_decay=0)
    x, y = ds.x_train, ds.y_train
    model, _ = train_new_model("mlp", x[:150], y[:150], 10, cfg, progress=False, hidden=(32,))
    fn = lambda: build_model("mlp", [1, 8, 8], 10, hidden=(32,))  # noqa: E731
    kw = {"n_shadows": 3, "attacks": ["loss"], "n_bootstrap": 0, "progress": False}
    with pytest.raises(ConfigError, match="members: 150 inputs but 140 labels"):
        audit_model(model, (x[:150], y[:140]), (x[150:290], y[150:300]), fn, cfg, **kw)
    with pytest.raises(ConfigError, match="nonmembers: 150 of 150 rows are also in members"):
        audit_model(model, (x[:150], y[:150]), (x[:150], y[:150]), fn, cfg, **kw)
    # A target wrapped in a softmax among shadows returning logits: refused, naming model 0.
    with pytest.raises(PrivquantError, match="model 0.s rows are probability vectors"):
        audit_model(
            nn.Sequential(model, nn.Softmax(-1)),
            (x[:150], y[:150]),
            (x[150:300], y[150:300]),
            fn,
            cfg,
            **kw,
        )


@pytest.mark.parametrize("variant,message", [
    ({"name": "d", "steps": [{"method": "split_distill", "teachers": 2, "exclusions": 2}]},
     r"variants.d.steps.0 \(split_distill\): exclusions: must be below teachers \(2\)"),
    ({"name": "d", "steps": [{"method": "qat", "quant": {"weight_bits": 4}, "loss_floor": 0.5, "targets": "self"}]},
     r"variants.d.steps.0 \(qat\): loss_floor works on the true labels"),
    ({"name": "d", "method": "reference_distill"}, r"needs 1 defender reference rows, data.reference_size is 0"),
    ({"name": "d", "method": "early_stopping"}, r"early_stopping\): needs 1000 defender reference rows"),
    ({"name": "d", "method": "privacy_rounding", "quant": {"weight_bits": 4}}, r"privacy_rounding\): needs 1 defender"),
    ({"name": "d", "method": "calibrate", "audit_rows": 100, "candidates": [[{"method": "ptq", "quant": {"weight_bits": 4}}]]},
     r"calibrate\): needs 100 defender reference rows"),
    ({"name": "d", "method": "privacy_bits", "avg_bits": 1.6, "candidates": [4, 2]}, r"avg_bits 1.6 is below every candidate"),
])  # fmt: skip
def test_steps_that_would_fail_after_training_fail_at_validation(
    variant: dict, message: str
) -> None:
    import time

    start = time.perf_counter()
    cfg = {
        **TINY,
        "data": {**TINY["data"], "reference_size": 0},
        "variants": [{"name": "fp32"}, variant],
    }
    with pytest.raises(ConfigError, match=message):
        load_config(cfg)
    assert time.perf_counter() - start < 1.0


def test_too_few_shadows_are_refused_before_any_training(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import numpy as np
    from torch import nn

    x, y = np.zeros((20, 4), np.float32), np.arange(20) % 2
    with pytest.raises(ConfigError, match="n_shadows: at least 2"):
        audit_model(nn.Linear(4, 2), (x[:10], y[:10]), (x[10:], y[10:]), lambda: nn.Linear(4, 2), TrainConfig(),
                    n_shadows=1)  # fmt: skip
    with pytest.raises(SystemExit):
        main(["defend", "ck", "--bits", "4", "--audit", "--audit-shadows", "1", "--out", "o"])
    assert "--audit-shadows: must be at least 2, got 1" in capsys.readouterr().err


def test_model_options_and_teacher_counts_that_cannot_work_name_their_field() -> None:
    import numpy as np

    from privquant.defenses import DefenseContext, train_model
    from privquant.defenses.distillation import SplitDistill
    from privquant.population import model_factory

    with pytest.raises(
        ConfigError, match=r"model.options: mlp cannot be built with \{'hidden': \[-3\]\}"
    ):
        model_factory("mlp", 10, {"hidden": [-3]})(np.zeros((2, 1, 8, 8), np.uint8))
    ctx = DefenseContext(x=np.zeros((3, 1, 8, 8), np.uint8), y=np.array([0, 1, 2]), x_reference=None,
                         y_reference=None, num_classes=10, train=TrainConfig(epochs=1), seed=0,
                         model_fn=model_factory("mlp", 10, {}))  # fmt: skip
    with pytest.raises(
        ConfigError, match="split_distill: 8 teachers need at least as many members, got 3"
    ):
        train_model(SplitDistill(teachers=8), ctx)
