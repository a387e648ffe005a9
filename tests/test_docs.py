"""What the README and the shipped configs promise, executed on small data."""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import require_dataset

ROOT = Path(__file__).resolve().parents[1]


def readme_python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


@pytest.fixture
def readme_namespace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """The names the README's snippets assume: a user's trained model and data (digits)."""
    from privquant.data import load_dataset
    from privquant.models import build_model
    from privquant.training import TrainConfig, train_new_model

    monkeypatch.chdir(tmp_path)  # snippets write runs/...
    ds = load_dataset("digits")
    xm, ym, xn, yn = ds.x_train[:200], ds.y_train[:200], ds.x_train[200:400], ds.y_train[200:400]
    model, _ = train_new_model(
        "mlp", xm, ym, 10, TrainConfig(epochs=5, batch_size=32), progress=False, hidden=(64,)
    )
    return {"my_model": model, "MyNet": lambda: build_model("mlp", [1, 8, 8], 10, hidden=(64,)), "model": model,
            "x_members": xm, "y_members": ym, "x_nonmembers": xn, "y_nonmembers": yn, "x_train": xm,
            "y_train": ym, "x_out": xn, "y_out": yn, "x_test": ds.x_test, "y_test": ds.y_test}  # fmt: skip


def test_readme_has_the_snippets_this_test_runs() -> None:
    blocks = readme_python_blocks()
    assert len(blocks) == 4
    assert "privquant.defend(" in blocks[0]  # the README leads with the one-call defense
    assert (
        "audit_model(" in blocks[1] and "register_defense" in blocks[2] and "quantize(" in blocks[3]
    )


@pytest.mark.slow
def test_readme_snippets_run(readme_namespace: dict, capsys: pytest.CaptureFixture[str]) -> None:
    from privquant.defenses import DEFENSES

    try:
        for block in readme_python_blocks():
            # The snippets' own sizes (20 epochs, 8 shadows) are kept: they are what users run.
            exec(compile(block, "README.md", "exec"), readme_namespace)  # noqa: S102
    finally:
        DEFENSES.pop("weight_noise", None)
    out = capsys.readouterr().out.split()
    accuracy, tpr, size, bits = float(out[0]), float(out[1]), int(out[2]), float(out[3])
    assert 0 <= accuracy <= 1 and 0 <= tpr <= 1 and size > 0 and 4 <= bits <= 8
    assert (Path("runs/q4") / "manifest.json").is_file() and (Path("ship") / "model.onnx").is_file()


def _shipped_demo(name: str) -> dict:
    return yaml.safe_load((files("privquant.pipeline") / name).read_text())


def test_the_quick_demo_is_the_full_demo_smaller() -> None:
    """`privquant demo` runs demo_quick.yaml; the slow test below runs demo.yaml. What makes that
    enough: the quick config differs only in sizes, the CNN's width and the PTQ rows it leaves out,
    so a key the quick demo adds would be a key no test ran."""
    from privquant.pipeline import load_config

    quick, full = _shipped_demo("demo_quick.yaml"), _shipped_demo("demo.yaml")
    load_config(quick)
    ptq = [v for v in full["variants"] if v.get("method") == "ptq"]
    assert ptq and quick["variants"] == [v for v in full["variants"] if v not in ptq]
    for key in ("seed", "train", "population", "attacks", "targets", "bootstrap"):
        assert quick.get(key) == full.get(key), key
    assert quick["model"] == {**full["model"], "options": {"width": 16}}
    assert quick["data"]["name"] == full["data"]["name"]
    assert quick["data"]["canaries"]["kind"] == full["data"]["canaries"]["kind"]
    assert quick["data"]["pool_size"] < full["data"]["pool_size"]


@pytest.mark.slow
def test_the_shipped_full_demo_config_runs_on_small_data(tmp_path: Path) -> None:
    """demo.yaml as shipped (every variant and attack, a superset of the quick demo's), with the
    data and epochs shrunk and the quick demo's half-width CNN."""
    from privquant.pipeline import load_config, run_audit

    require_dataset("fashion-mnist")
    raw = _shipped_demo("demo.yaml")
    raw["data"].update(pool_size=400, reference_size=100, population_size=100, test_size=500)
    raw["data"]["canaries"]["count"] = 40  # the shipped 300 would exceed half of this pool
    raw["model"]["options"] = {"width": 16}
    raw["train"]["epochs"] = 10
    raw["population"]["n_models"] = 4
    raw["bootstrap"] = 10
    config = load_config(raw)
    res = run_audit(config, tmp_path / "run", progress=False)
    assert list(res.variants) == [v["name"] for v in raw["variants"]]
    assert set(res.variants["fp32"].attacks) == set(raw["attacks"])
    for v in res.variants.values():
        assert np.isfinite(v.test_accuracy) and v.test_accuracy > 0.3
    assert (tmp_path / "run" / "report.html").is_file()


def test_readme_yaml_variants_validate() -> None:
    from privquant.pipeline import load_config

    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert blocks
    for block in blocks:
        snippet = yaml.safe_load(block)
        if "plugins" in snippet:  # the user-model snippet quotes the shipped end-to-end config
            shipped = ROOT / "benchmarks" / "pm2_cifar10" / "config.yaml"
            config = load_config(shipped)
            assert (
                config.plugins == snippet["plugins"]
                and config.model.name == snippet["model"]["name"]
            )
            assert config.data.model_dump() == {**config.data.model_dump(), **snippet["data"]}
            continue
        variants = snippet["variants"]
        config = load_config({"data": {"name": "digits", "pool_size": 300}, "model": {"name": "mlp"},
                              "variants": variants})  # fmt: skip
        assert [v.name for v in config.variants] == [v["name"] for v in variants]


# Configs kept as they ran, whose control ran elsewhere (and the doc shows it beside them).
CONTROL_ELSEWHERE = {
    # issue 10, code 8fa79ec: the DMP rows' control is the main ResNet-20 run's, same split
    # (docs/results/defense.md, "control: FP32 on members + the same 2,500 rows (main run)")
    "cifar10_resnet20_components2.yaml",
}


def _rows_trained_on(step: object, reference_size: int) -> int:
    """Defender reference rows a step's model learns from (early stopping only selects: 0)."""
    method = getattr(step, "method", "")
    if method == "split_distill":
        return step.reference_rows
    if method == "reference_distill":
        return step.reference_rows or reference_size  # None: all of them
    return 0


@pytest.mark.parametrize(
    "path",
    sorted((ROOT / "configs").glob("*.yaml"))
    + sorted((ROOT / "benchmarks").rglob("config.yaml"))
    + sorted((ROOT / "src" / "privquant" / "pipeline").glob("demo*.yaml")),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_every_shipped_config_validates_and_carries_its_controls(path: Path) -> None:
    """A config the docs tell people to run must load; one whose defense trains on reference rows
    must also list the members-plus-reference-rows control, so the extra data is not credited to
    the defense."""
    from privquant.pipeline import load_config

    config = load_config(path)
    size = config.data.reference_size
    rows = {n for v in config.variants for step in v.steps if (n := _rows_trained_on(step, size))}
    controls = {
        step.rows
        for v in config.variants
        for step in v.steps
        if step.method == "with_reference_rows"
    }
    if path.name in CONTROL_ELSEWHERE:
        assert rows and not controls  # still true, or the exemption is stale
        return
    assert not rows or controls, f"{path.name}: trains on reference rows without a control variant"
    assert rows <= controls, (
        f"{path.name}: controls add {sorted(controls)} rows, defenses {sorted(rows)}"
    )
