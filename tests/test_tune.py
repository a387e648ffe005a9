"""Tuning a baseline on a validation split of the reference rows (issue 25: tuned DP-SGD)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from privquant.cli import main
from privquant.errors import ConfigError
from privquant.pipeline import load_config
from privquant.pipeline.run import prepared_split
from privquant.pipeline.tune import grid_points, tune_step

CONFIG = {
    "name": "tune-tiny",
    "data": {"name": "digits", "pool_size": 600, "reference_size": 300},
    "model": {"name": "mlp", "options": {"hidden": [64]}},
    "train": {"epochs": 6, "batch_size": 32, "optimizer": "adam", "lr": 0.003, "weight_decay": 0,
              "precision": "fp32"},
    "population": {"n_models": 3},
    "variants": [{"name": "fp32"}],
    "attacks": ["loss"],
}  # fmt: skip


def test_a_sweep_ranks_points_on_reference_rows_and_resumes(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    config = load_config(CONFIG)
    step, grid = {"method": "weight_decay"}, {"value": [1e-5, 100.0]}
    summary = tune_step(config, step, grid, validation_rows=200, out=tmp_path, progress=False)
    accs = [p["validation_accuracy"] for p in summary["points"]]
    assert accs == sorted(accs, reverse=True) and summary["best"] == summary["points"][0]
    # A weight decay of 100 cannot fit digits: the sweep must tell the two apart, and pick the small one.
    assert summary["best"]["step"]["value"] == 1e-5 and accs[0] > 0.8 and accs[0] - accs[1] > 0.15
    # Beside the points, the same model without a defense: what the costs are relative to.
    plain = summary["plain"]
    assert plain["step"] is None and plain["validation_accuracy"] > 0.8
    for p in summary["points"]:
        assert p["accuracy_cost_vs_plain"] == pytest.approx(
            plain["validation_accuracy"] - p["validation_accuracy"]
        )
    assert summary["points"][-1]["accuracy_cost_vs_plain"] > 0.15
    assert summary["members"] == int(prepared_split(config)[1].members(0).size)
    assert json.loads((tmp_path / "tune.json").read_text())["points"] == summary["points"]
    # Rerun: every point comes from its record, nothing trains.
    import privquant.pipeline.tune as tune

    monkeypatch.setattr(
        tune, "train_model", lambda *a, **k: pytest.fail("retrained a cached point")
    )
    assert (
        tune_step(config, step, grid, validation_rows=200, out=tmp_path, progress=False) == summary
    )


def test_validation_rows_are_reference_rows_no_model_trains_on() -> None:
    from privquant.defenses.base import REFERENCE_ORDER_SEED

    ds, split = prepared_split(load_config(CONFIG))
    order = np.random.default_rng(REFERENCE_ORDER_SEED).permutation(len(split.reference))
    validation = split.reference[order[:200]]
    assert not np.intersect1d(validation, split.pool).size
    assert (
        len(np.unique(ds.y_train[validation])) == ds.num_classes
    )  # a shuffled, not sorted, prefix


def test_bad_sweeps_fail_before_anything_trains(tmp_path) -> None:  # noqa: ANN001
    config = load_config(CONFIG)
    with pytest.raises(ConfigError, match=r"grid point 1 .*value"):
        grid_points({"method": "weight_decay"}, {"value": [0.1, -1.0]})
    with pytest.raises(ConfigError, match="not a train-stage method"):
        grid_points({"method": "ptq"}, {"quant": [{"weight_bits": 4}]})
    with pytest.raises(ConfigError, match="grid.value: expected a non-empty list"):
        grid_points({"method": "weight_decay"}, {"value": 3})
    with pytest.raises(ConfigError, match="validation_rows: 300"):
        tune_step(config, {"method": "weight_decay"}, {"value": [1.0]}, 300, tmp_path / "t")
    assert not (tmp_path / "t").exists()
    import yaml

    (tmp_path / "c.yaml").write_text(yaml.safe_dump(CONFIG))
    code = main(["tune", str(tmp_path / "c.yaml"), "--step", "{method: dp_sgd, epsilon: 8}", "--grid", "{lr: []}",
                 "--out", str(tmp_path / "c")])  # fmt: skip
    assert code == 2 and not (tmp_path / "c").exists()


def test_points_that_share_teachers_train_them_once(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    # A distillation recipe swept over temperature: the 2 sub-teachers are the same at every point,
    # so 2 points cost 2 teachers + 2 students, not 4 teachers + 2 students.
    from privquant.defenses.base import DefenseContext

    calls = []
    real = DefenseContext.train_fresh

    def counting(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls.append(len(args[0]) if args else len(self.x))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(DefenseContext, "train_fresh", counting)
    config = load_config(CONFIG)
    summary = tune_step(config, {"method": "split_distill", "teachers": 2}, {"temperature": [1.0, 3.0]},
                        validation_rows=200, out=tmp_path, progress=False)  # fmt: skip
    members = summary["members"]
    # 2 teachers (half the members each), 2 students and the undefended model (all of them)
    assert len(calls) == 5 and calls.count(members) == 3, calls
    assert {p["step"]["temperature"] for p in summary["points"]} == {1.0, 3.0}
    assert all(p["validation_accuracy"] > 0.5 for p in summary["points"])
