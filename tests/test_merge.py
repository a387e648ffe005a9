"""Audits run in parts (split by variants) merge into exactly the audit run in one go."""

from __future__ import annotations

import json
import math

import pytest

from privquant.cli import main
from privquant.errors import PrivquantError
from privquant.pipeline import load_config, run_audit
from privquant.results import AuditResults, merge_results
from privquant.results.merge import measured

BASE = {
    "name": "parts",
    "data": {"name": "digits", "pool_size": 400, "reference_size": 0, "population_size": 200, "test_size": 300},
    "model": {"name": "mlp", "options": {"hidden": [64]}},
    "train": {"epochs": 8, "batch_size": 32, "optimizer": "adam", "lr": 0.003, "weight_decay": 0,
              "precision": "fp32"},
    "population": {"n_models": 4},
    "attacks": ["loss", "lira_online_fixed_var"],
    "targets": "all",
    "bootstrap": 10,
}  # fmt: skip
FP32 = {"name": "fp32"}
PTQ4 = {"name": "ptq4", "method": "ptq", "quant": {"weight_bits": 4, "first_last_bits": None}}
QAT2 = {
    "name": "qat2",
    "method": "qat",
    "quant": {"weight_bits": 2, "first_last_bits": None},
    "epochs": 1,
}


def _run(tmp_path, name: str, variants: list[dict], **patch) -> AuditResults:  # noqa: ANN001
    config = load_config(
        {**BASE, **patch, "variants": variants, "cache_dir": str(tmp_path / "cache")}
    )
    run_audit(config, tmp_path / name, progress=False)
    return AuditResults.load(tmp_path / name)  # what merge reads: the saved results


def _measured(v) -> dict:  # noqa: ANN001
    return measured(json.loads(v.model_dump_json()))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):  # noqa: ANN001, ANN201
    tmp = tmp_path_factory.mktemp("merge")
    return (
        tmp,
        _run(tmp, "a", [FP32, PTQ4]),
        _run(tmp, "b", [FP32, QAT2]),
        _run(tmp, "all", [FP32, PTQ4, QAT2]),
    )


def test_merged_parts_equal_the_audit_run_in_one_go(runs) -> None:  # noqa: ANN001
    tmp, a, b, whole = runs
    merged = merge_results([a, b], names=["a", "b"])
    assert list(merged.variants) == ["fp32", "ptq4", "qat2"]
    for name in merged.variants:
        assert _measured(merged.variants[name]) == _measured(whole.variants[name]), name
    assert [v["name"] for v in merged.config["variants"]] == ["fp32", "ptq4", "qat2"]
    assert [p["variants"] for p in merged.machine["parts"]] == [["fp32", "ptq4"], ["qat2"]]
    assert merged.machine["trained_on"] == whole.machine["trained_on"]  # one population of 4
    assert sum(whole.machine["trained_on"].values()) == 4
    # The CLI writes the merged results and a report from them.
    assert main(["merge", str(tmp / "a"), str(tmp / "b"), "--out", str(tmp / "m")]) == 0
    assert list(AuditResults.load(tmp / "m").variants) == ["fp32", "ptq4", "qat2"]
    assert (tmp / "m" / "report.md").exists()


def test_parts_that_disagree_are_refused(runs) -> None:  # noqa: ANN001
    tmp, a, b, _ = runs
    other = _run(tmp, "seed1", [FP32, QAT2], seed=1)
    with pytest.raises(PrivquantError, match="another split|config.seed differs"):
        merge_results([a, other], names=["a", "seed1"])
    tampered = b.model_copy(deep=True)
    tampered.variants["fp32"].test_accuracy += 0.01
    with pytest.raises(PrivquantError, match="variant fp32 differs between a and b"):
        merge_results([a, tampered], names=["a", "b"])
    with pytest.raises(PrivquantError, match="at least two"):
        merge_results([a])


def test_last_bit_float_differences_merge_and_real_ones_do_not(runs) -> None:  # noqa: ANN001
    # A part run on another CPU with the models and signals carried recomputes the attack
    # statistics in another summation order: its thresholds differ in the last bits (measured
    # 5.6e-13 relative between two hosts), which is the same measurement, not another model.
    _, a, b, _ = runs
    ulps = b.model_copy(deep=True)
    attack = next(iter(ulps.variants["fp32"].attacks.values()))
    metric = next(iter(attack.mean))
    attack.mean[metric] = math.nextafter(attack.mean[metric], math.inf)
    ulps.variants["fp32"].test_accuracy = math.nextafter(ulps.variants["fp32"].test_accuracy, 1.0)
    merged = merge_results([a, ulps], names=["a", "ulps"])
    # The merged variant is the first part's.
    assert merged.variants["fp32"].test_accuracy == a.variants["fp32"].test_accuracy
    moved = b.model_copy(deep=True)
    moved.variants["fp32"].test_accuracy *= 1 + 1e-6
    with pytest.raises(PrivquantError, match="variant fp32 differs between a and moved"):
        merge_results([a, moved], names=["a", "moved"])


def test_models_are_counted_once_per_population_where_they_trained() -> None:
    from privquant.results import ModelRecord, VariantResult
    from privquant.results.schema import trained_on_counts

    def variant(steps: list[dict], where: list[str | None]) -> VariantResult:
        records = [ModelRecord(test_accuracy=None, train_accuracy=1.0, size_bytes=1, bits=32,
                               trained_on=w) for w in where]  # fmt: skip
        return VariantResult(steps=steps, description="", bits=32, size_bytes=1, test_accuracy=None,
                             test_accuracy_std=None, train_accuracy=1.0, per_model=records)  # fmt: skip

    gpu, cpu = "cuda: H100, torch 2.13.0", "cpu: EPYC, torch 2.13.0"
    hamp = {"method": "hamp", "entropy_fraction": 0.8, "alpha": 0.01}
    counts = trained_on_counts({
        "fp32": variant([], [cpu, cpu, None]),
        "qat4": variant([{"method": "qat", "quant": {"weight_bits": 4}}], [cpu, cpu, None]),  # fp32's
        "hamp": variant([hamp, {"method": "hamp_output"}], [gpu, gpu, cpu]),
        "hamp4": variant([hamp, {"method": "qat", "quant": {"weight_bits": 4}}], [gpu, gpu, cpu]),
    })  # fmt: skip
    assert counts == {cpu: 3, gpu: 2, "not recorded": 1}
