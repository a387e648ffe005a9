"""Attack parameters are typed and checked with the config; registries refuse duplicate names."""

from __future__ import annotations

import time

import pytest
from pydantic import BaseModel
from torch import nn

from privquant.attacks import ATTACKS, get_attack
from privquant.attacks.base import Attack, register
from privquant.defenses import DEFENSES, register_defense
from privquant.errors import ConfigError
from privquant.models import MODELS, register_model
from privquant.pipeline import load_config

BASE = {
    "data": {"name": "digits"},
    "model": {"name": "mlp"},
    "attacks": ["rmia", "rmia_online", "shokri", "loss"],
}


@pytest.mark.parametrize("params,message", [
    ({"rmia_online": {"temprature": 2}}, r"attack_params\.rmia_online\.temprature: Extra inputs are not permitted "
                                         r"\(got 2\); rmia_online takes \['gamma', 'n_population', 'seed', 'temperature'\]"),
    ({"rmia": {"temperature": 0}}, r"attack_params\.rmia\.temperature: Input should be greater than 0"),
    ({"rmia": {"gamma": -1}}, r"attack_params\.rmia\.gamma: Input should be greater than 0"),
    ({"rmia_online": {"offline_a": 0.3}}, r"rmia_online\.offline_a: Extra inputs"),  # online has no a
    ({"shokri": {"top_k": "ten"}}, r"attack_params\.shokri\.top_k: Input should be a valid integer"),
    ({"loss": {"temperature": 2}}, r"attack_params\.loss\.temperature: Extra inputs .*loss takes none"),
])  # fmt: skip
def test_bad_attack_parameters_fail_at_validation_naming_the_field(
    params: dict, message: str
) -> None:
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=message):
        load_config({**BASE, "attack_params": params})
    assert time.perf_counter() - start < 1.0  # before any data loads or model trains


def test_good_parameters_are_coerced_and_reach_the_attack() -> None:
    config = load_config(
        {**BASE, "attack_params": {"rmia": {"temperature": "2", "offline_a": 0.5}}}
    )
    assert config.attack_params == {"rmia": {"temperature": 2.0, "offline_a": 0.5}}
    assert get_attack("rmia").validate_params({}) == {}  # defaults stay the function's own


def test_every_registered_attack_declares_a_params_model() -> None:
    for attack in ATTACKS.values():
        assert issubclass(attack.params, BaseModel)
        assert attack.params.model_config.get("extra") == "forbid"


def test_registries_refuse_a_duplicate_name_unless_asked_to_replace() -> None:
    loss = get_attack("loss")
    with pytest.raises(ConfigError, match="attack 'loss' is already registered"):
        register(Attack("loss", loss.score, "another loss"))
    register(Attack("loss", loss.score, loss.description), replace=True)
    assert get_attack("loss").description == loss.description
    register(loss, replace=True)

    with pytest.raises(ConfigError, match="model 'mlp' is already registered"):
        register_model("mlp")(lambda shape, n: nn.Linear(1, n))
    original = MODELS["mlp"]
    try:
        register_model("mlp", images_only=False, replace=True)(lambda shape, n: nn.Linear(1, n))
        assert MODELS["mlp"] is not original
    finally:
        MODELS["mlp"] = original

    ptq = DEFENSES["ptq"]
    with pytest.raises(ConfigError, match="defense method 'ptq' is already registered"):
        register_defense(ptq.config, "transform")(ptq.handler)
    try:
        register_defense(ptq.config, ptq.stage, replace=True)(ptq.handler)
    finally:
        DEFENSES["ptq"] = ptq


def test_nan_scores_stop_the_attack_instead_of_reaching_a_metric() -> None:
    import numpy as np

    from privquant.attacks.run import attack_scores
    from privquant.signals import Signals

    rng = np.random.default_rng(0)
    signals = Signals(rng.normal(size=(4, 30, 1, 3)).astype(np.float32), rng.integers(0, 3, 30),
                      rng.random((4, 30)) < 0.5)  # fmt: skip
    register(Attack("nan_probe", lambda s, t, r: np.full(s.n_points, np.nan), "always NaN"))
    try:
        with pytest.raises(
            ConfigError, match="attack nan_probe: 30 of 30 scores against target 0 are NaN"
        ):
            attack_scores(signals, "nan_probe", 0)
    finally:
        ATTACKS.pop("nan_probe")


_PROBE = """
from typing import Literal

from privquant.defenses import register_defense
from privquant.defenses.base import DefenseConfig


class ProbeStep(DefenseConfig):
    method: Literal["source_probe"] = "source_probe"
    scale: float = {default}


@register_defense(ProbeStep, "transform", replace=True)
def probe(model, step, ctx):
    return {body}
"""


def test_a_defense_exec_under_another_files_name_is_keyed_by_its_own_code(tmp_path) -> None:
    """A handler defined in a README block or notebook cell has no source file of its own; its
    code hash must neither crash on the file its code object names (prose whose brackets do not
    balance) nor ignore edits to the handler or its config (a stale cached model)."""
    prose = tmp_path / "README.md"
    prose.write_text("# Notes\n\n" + "The default recipe (4 bits [73.8%, -3.4 points\n" * 30)

    def code_hash(default: str, body: str) -> str:
        src = _PROBE.format(default=default, body=body)
        exec(compile(src, str(prose), "exec", dont_inherit=True), {"__name__": "readme_block"})
        return DEFENSES["source_probe"].code

    try:
        first = code_hash("1.0", "model")
        assert code_hash("1.0", "model") == first  # the same code: the same key, every time
        assert code_hash("1.0", "model.eval()") != first  # an edited handler
        assert code_hash("2.0", "model") != first  # an edited config default
    finally:
        DEFENSES.pop("source_probe", None)
