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
    ({"model": {"name": "vgg"}}, "model.name: Input should be 'mlp', 'small_cnn'"),
    ({"trian": {}}, "trian: Extra inputs are not permitted"),
    ({"variants": [{"name": "q", "method": "ptq", "quant": {"weight_bits": 4}}]}, "must include {name: fp32"),
    ({"variants": [{"name": "fp32"}, {"name": "q", "method": "ptq"}]}, "needs a 'quant' section"),
    ({"variants": [{"name": "fp32"}, {"name": "q", "method": "ptq", "quant": {"weight_bits": 5.5}}]},
     "variants.1.quant.weight_bits"),
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


def _metrics(results: dict) -> dict:
    return {
        (v, a): e["mean"]
        for v, var in results["variants"].items()
        for a, e in var["attacks"].items()
    }


def test_end_to_end_resume_and_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(TINY)
    import privquant.pipeline.population as population
    import privquant.pipeline.run as run_module

    # 1. Interrupt the run while it quantizes the models of the second variant.
    real_apply, calls = run_module.apply_variant, {"n": 0}

    def flaky_apply(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return real_apply(*args, **kwargs)

    monkeypatch.setattr(run_module, "apply_variant", flaky_apply)
    with pytest.raises(KeyboardInterrupt):
        run_audit(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "results.json").exists()
    monkeypatch.setattr(run_module, "apply_variant", real_apply)

    # 2. Rerun: no model is trained again, and the numbers equal an uninterrupted run's.
    trained = {"n": 0}
    real_train = population.train_new_model

    def counting_train(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        trained["n"] += 1
        return real_train(*args, **kwargs)

    monkeypatch.setattr(population, "train_new_model", counting_train)
    resumed = run_audit(config, tmp_path / "run", progress=False)
    assert trained["n"] == 0
    fresh = run_audit(config, tmp_path / "fresh", progress=False)
    assert trained["n"] == 4
    assert _metrics(resumed) == _metrics(fresh)

    # 3. Structure and sanity of results.json.
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert set(results["variants"]) == {"fp32", "ptq4", "qat2"}
    fp, q2 = results["variants"]["fp32"], results["variants"]["qat2"]
    assert (
        fp["bits"] == 32
        and q2["bits"] == pytest.approx(2, abs=0.1)
        and q2["size_bytes"] < fp["size_bytes"] / 10
    )
    assert fp["train_accuracy"] > fp["test_accuracy"] > 0.8  # the targets overfit
    loss = fp["attacks"]["loss"]
    assert loss["mean"]["auc"] > 0.55
    one = loss["per_target"]["0"]
    assert_reports_every_metric(one)
    assert "attacks_naive_fp32_shadows" in q2
    rel = q2["relative_change_vs_fp32"]["loss"]["auc"]
    assert rel == pytest.approx(
        (loss["mean"]["auc"] - q2["attacks"]["loss"]["mean"]["auc"]) / loss["mean"]["auc"]
    )
    assert results["timings_seconds"]["total"] > 0 and results["machine"]["torch"]

    # 4. The report re-renders from results.json alone.
    for f in ("report.md", "report.html"):
        (tmp_path / "run" / f).unlink()
    assert main(["report", str(tmp_path / "run")]) == 0
    page = (tmp_path / "run" / "report.html").read_text()
    assert "data:image/png;base64," in page and "qat2 (naive: FP32 shadows)" in page
    assert "ROC (log-log): lira_online_fixed_var" in (tmp_path / "run" / "report.md").read_text()

    # 5. An edited config never reuses stale signals: same variant name, new bit width.
    edited = json.loads(json.dumps(TINY))
    edited["variants"][1]["quant"]["weight_bits"] = 3
    again = run_audit(load_config(edited), tmp_path / "run", progress=False)
    assert again["variants"]["ptq4"]["bits"] == pytest.approx(3, abs=0.1)
    assert _metrics(again)[("fp32", "loss")] == _metrics(resumed)[("fp32", "loss")]


def test_report_rejects_foreign_json(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text("{}")
    assert main(["report", str(tmp_path)]) == 2


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
    assert set(res["variants"]) == {"fp32", "ptq3"}
    assert res["variants"]["fp32"]["attacks"]["loss"]["mean"]["auc"] > 0.55
    assert res["variants"]["ptq3"]["size_bytes"] < res["variants"]["fp32"]["size_bytes"]
    assert np.isfinite(res["variants"]["ptq3"]["test_accuracy"])
