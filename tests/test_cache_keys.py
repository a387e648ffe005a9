"""Cache keys come from the config models and from code, not from hand-kept lists or comments."""

from __future__ import annotations

import pytest
from pydantic import Field

from privquant.artifacts import source_digest
from privquant.pipeline import load_config
from privquant.pipeline.config import STAGES, AuditConfig, PopulationConfig

BASE = {"data": {"name": "digits", "pool_size": 300}, "model": {"name": "mlp"}}


def test_source_digest_ignores_comments_docstrings_and_layout_only() -> None:
    code = "def f(x):\n    return x + 1\n"
    same = 'def f(x):  # why\n    """What."""\n\n    return (x + 1)\n'
    assert source_digest(code) == source_digest(same)
    assert source_digest(code) != source_digest(code.replace("+ 1", "+ 2"))
    assert source_digest(code) != source_digest(code.replace("x + 1", "1 + x"))
    # A string that is not a docstring is code (e.g. an error message or a dict key).
    assert source_digest("X = 1\n") != source_digest("X = 1\n'text'\nY = 'a'\n")


def test_every_top_level_field_belongs_to_one_stage() -> None:
    config = load_config(BASE)
    seen = [name for stage in STAGES for name in config.identity(stage)]
    assert sorted(seen) == sorted(AuditConfig.model_fields)
    assert set(config.identity("attacks")) == {"attacks", "attack_params", "naive", "bootstrap"}
    assert set(config.identity("run")) == {"cache_dir", "executor"}
    with pytest.raises(ValueError, match="stage must be one of"):
        config.identity("signal")


def test_a_new_config_field_enters_the_signals_key_unless_declared_otherwise() -> None:
    class NewPopulation(PopulationConfig):
        new_knob: int = 0

    class NewConfig(AuditConfig):
        population: NewPopulation = Field(default_factory=NewPopulation)
        other_knob: float = 1.0
        report_only: str = Field("x", json_schema_extra={"stage": "report"})

    a = NewConfig.model_validate(BASE)
    nested = NewConfig.model_validate({**BASE, "population": {"new_knob": 1}})
    top = NewConfig.model_validate({**BASE, "other_knob": 2.0})
    declared = NewConfig.model_validate({**BASE, "report_only": "y"})
    assert a.identity("signals") != nested.identity("signals")
    assert a.identity("signals") != top.identity("signals")
    assert a.identity("signals") == declared.identity("signals")


@pytest.mark.parametrize("patch,changes", [
    ({"bootstrap": 7}, {"attacks"}),
    ({"attack_params": {"loss": {}}, "attacks": ["loss"]}, {"attacks"}),
    ({"executor": {"kind": "local"}, "cache_dir": "/tmp/elsewhere"}, {"run"}),
    ({"name": "renamed"}, {"report"}),
    ({"train": {"epochs": 3}}, {"signals"}),
    ({"population": {"queries": 3}}, {"signals"}),
    ({"data": {"name": "digits", "pool_size": 300, "canaries": {"count": 10}}}, {"signals"}),
])  # fmt: skip
def test_each_edit_changes_only_the_stage_it_shapes(patch: dict, changes: set[str]) -> None:
    before, after = load_config(BASE), load_config({**BASE, **patch})
    changed = {s for s in STAGES if before.identity(s) != after.identity(s)}
    assert changed == changes
