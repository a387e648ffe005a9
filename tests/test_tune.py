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
        # The cost's interval is paired on the same 200 rows: it holds the cost.
        lo, hi = p["accuracy_cost_ci"]
        assert lo <= p["accuracy_cost_vs_plain"] <= hi
    # 100 ruins the fit: its cost is resolved (the interval clears 0) by the pairing, and so is
    # its gap to the best point.
    assert summary["points"][-1]["accuracy_cost_ci"][0] > 0.1
    assert summary["points"][-1]["behind_best_ci"][0] > 0.1
    assert summary["points"][0]["behind_best_ci"] == [0.0, 0.0]
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
    # Each point's recipe is priced from an empty cache: the first trained the teachers (nothing
    # reused), the second reused them and is charged their recorded training time, not 0.
    first, second = sorted(summary["points"], key=lambda p: p["step"]["temperature"])
    assert first["recipe_seconds"] == first["seconds"]
    reused = second["recipe_seconds"] - second["seconds"]
    assert 0 < reused < first["seconds"]
    assert second["recipe_cost_vs_plain"] == pytest.approx(
        second["recipe_seconds"] / summary["plain"]["seconds"]
    )


def test_a_sweep_run_in_several_calls_is_summarized_as_one(tmp_path, capsys) -> None:  # noqa: ANN001
    # Refining a grid point by point (as a long DP-SGD tune does) must not leave each call's
    # summary blind to the others: ``sweep`` ranks every point of the same identity in the folder.
    config = load_config(CONFIG)
    step = {"method": "weight_decay"}
    first = tune_step(
        config, step, {"value": [100.0]}, validation_rows=200, out=tmp_path, progress=False
    )
    second = tune_step(
        config, step, {"value": [1e-5]}, validation_rows=200, out=tmp_path, progress=False
    )
    assert [p["step"]["value"] for p in second["points"]] == [1e-5]
    assert [p["step"]["value"] for p in second["sweep"]] == [1e-5, 100.0]
    assert second["sweep"][1]["validation_accuracy"] == first["points"][0]["validation_accuracy"]
    # Exact 95% interval on 200 rows: about +-5 points.
    for p in [second["plain"], *second["sweep"]]:
        lo, hi = p["validation_ci"]
        assert lo < p["validation_accuracy"] < hi and 0.05 < hi - lo < 0.2
    assert second["sweep"][1]["accuracy_cost_vs_plain"] > 0.15
    # The command prints each point with its interval, and the sweep across calls.
    import yaml

    (tmp_path / "c.yaml").write_text(yaml.safe_dump(CONFIG))
    code = main(["tune", str(tmp_path / "c.yaml"), "--step", "{method: weight_decay}", "--grid", "{value: [1.0e-5]}",
                 "--validation-rows", "200", "--out", str(tmp_path)])  # fmt: skip
    out = capsys.readouterr().out
    lo, hi = second["sweep"][0]["validation_ci"]
    assert code == 0 and f"[{lo:.3f}, {hi:.3f}]" in out and "sweep (2 points recorded" in out
    # ... each point's cost paired on the same rows, and whether the best beats the rest.
    assert "paired" in out and 'best - {"method": "weight_decay", "value": 100.0}' in out
    assert "] paired, resolved" in out
    # Another validation split is another identity: its points are not mixed into this sweep.
    other = tune_step(
        config, step, {"value": [1e-3]}, validation_rows=150, out=tmp_path, progress=False
    )
    assert [p["step"]["value"] for p in other["sweep"]] == [1e-3]
    assert json.loads((tmp_path / "tune.json").read_text())["sweep"] == other["sweep"]


def test_a_tune_table_in_the_docs_is_generated_from_its_tune_json(tmp_path) -> None:  # noqa: ANN001
    from privquant.report.tables import render_file

    dp = {"epsilon": 7.99, "delta": 3.9e-5, "noise_multiplier": 1.7, "steps": 150.0}
    step = {"method": "dp_sgd", "momentum": 0, "batch_size": 512}
    summary = {"model_index": 0, "members": 2555, "validation_rows": 1000,
               "plain": {"step": None, "validation_accuracy": 0.6, "seconds": 60.0, "defense_info": None},
               "sweep": [{"step": {**step, "lr": 4}, "validation_accuracy": 0.31, "seconds": 600.0, "defense_info": dp},
                         {"step": {**step, "lr": 1}, "validation_accuracy": 0.13, "seconds": 540.0,
                          "defense_info": dp}]}  # fmt: skip
    # The last call's points only: the table must list the whole sweep.
    summary["points"] = summary["sweep"][1:]
    (tmp_path / "tune.json").write_text(json.dumps(summary))
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- table\nkind: tune\nresults: tune.json\n-->\nstale\n<!-- /table -->\n")
    _, text = render_file(doc, tmp_path)
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert rows[1].startswith("| no defense | 60.0% [56.9, 63.1] |")  # exact interval on 1,000 rows
    # Points named by the field that varies, ranked; cost in points and time against no defense.
    assert rows[2].startswith(
        "| lr 4 | 31.0% [28.1, 34.0] | -29.0 | 600 s (10.0x) | 7.99 (3.9e-05) | 1.7 | 150 |"
    )
    assert rows[3].startswith("| lr 1 | 13.0%")
    assert (
        '{"method": "dp_sgd", "momentum": 0, "batch_size": 512}' in text and "2,555 members" in text
    )
    # Where every point recorded its cost from an empty cache, that is the time shown.
    for p, recipe in zip(summary["sweep"], (900.0, 840.0), strict=True):
        p["recipe_seconds"] = recipe
    (tmp_path / "tune.json").write_text(json.dumps(summary))
    rows = [line for line in render_file(doc, tmp_path)[1].splitlines() if line.startswith("| ")]
    assert "training time from scratch" in rows[0] and "| 900 s (15.0x) |" in rows[2]
    # ... and where every point kept its paired cost interval, it stands beside the cost.
    for p, ci in zip(summary["sweep"], ([0.26, 0.32], [0.44, 0.50]), strict=True):
        p["accuracy_cost_ci"] = ci
    (tmp_path / "tune.json").write_text(json.dumps(summary))
    rows = [line for line in render_file(doc, tmp_path)[1].splitlines() if line.startswith("| ")]
    assert "paired 95% CI" in rows[0] and "| -29.0 [-32.0, -26.0] |" in rows[2]
    (tmp_path / "tune.json").write_text("{}")
    with pytest.raises(Exception, match="not a privquant tune.json"):
        render_file(doc, tmp_path)


PLUGIN = """
from torch import nn
from privquant.models import register_model


@register_model("tune_plugin_mlp", images_only=False, replace=True)
def tune_plugin_mlp(shape, num_classes, **options):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, {hidden}), nn.ReLU(), nn.Linear({hidden}, num_classes))
"""


def test_editing_a_plugin_model_retrains_its_points(tmp_path) -> None:  # noqa: ANN001
    # A tuned point is keyed by what trained it: for a model from a plugin file, that file.
    plugin = tmp_path / "tune_plugin.py"
    plugin.write_text(PLUGIN.format(hidden=32))
    config = load_config({**CONFIG, "plugins": [str(plugin)], "model": {"name": "tune_plugin_mlp"}})
    step, grid = {"method": "weight_decay"}, {"value": [1e-5]}

    def records() -> int:
        tune_step(config, step, grid, validation_rows=200, out=tmp_path / "t", progress=False)
        return len(list((tmp_path / "t" / "points").glob("*.json")))

    assert records() == 2  # the point and the undefended model
    assert records() == 2  # unchanged: both read back
    plugin.write_text(PLUGIN.format(hidden=16))
    assert records() == 4  # the edited model is another model: both retrained
