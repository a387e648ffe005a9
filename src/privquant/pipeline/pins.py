"""Precision pins: a variant's models keep the precision they were trained in, on any host.

``precision: auto`` resolves to what trains fastest on the host at hand, and that choice enters
every cache key. A study spread over sessions on hosts that resolve it differently (bf16 on one,
fp32 on the next) would otherwise retrain every carried model on the second host, and re-query
them, so its parts would no longer merge. A pin says, for the population of one variant, which
precision its models were trained in: that population, the transforms of every variant built on
it and their signals are keyed (and, for anything missing, computed) with the pinned precision,
while every other population still uses what ``auto`` chose here. Training a bf16 pin on a host
without fast bf16 works, only slowly: pin what is already trained.

Pins live in the run folder (``precision.json``: ``{variant: {precision, channels_last}}``), so
every later call on that run keeps them, and results.json's machine block records them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from privquant.artifacts import atomic_write_json, content_hash
from privquant.defenses import VariantConfig
from privquant.errors import ConfigError
from privquant.pipeline.config import AuditConfig

PINS_FILE = "precision.json"
PRECISIONS = ("fp32", "bf16")

Pin = dict[str, Any]


def parse_pin(text: str) -> tuple[str, Pin]:
    """``VARIANT=PRECISION[+channels_last]`` (e.g. ``fp32=bf16+channels_last``) as a pin."""
    variant, sep, value = text.partition("=")
    precision, _, layout = value.partition("+")
    if not sep or not variant or precision not in PRECISIONS or layout not in ("", "channels_last"):
        raise ConfigError(
            f"--pin-precision: {text!r}; expected VARIANT=PRECISION[+channels_last] with PRECISION "
            f"one of {', '.join(PRECISIONS)} (e.g. fp32=bf16+channels_last)"
        )
    return variant, {"precision": precision, "channels_last": layout == "channels_last"}


def _checked(pins: Any, where: str) -> dict[str, Pin]:
    if not isinstance(pins, dict):
        raise ConfigError(
            f"{where}: expected {{variant: {{precision, channels_last}}}}, got {pins!r}"
        )
    for name, pin in pins.items():
        ok = (
            isinstance(pin, dict)
            and set(pin) == {"precision", "channels_last"}
            and pin["precision"] in PRECISIONS
            and isinstance(pin["channels_last"], bool)
        )
        if not ok:
            raise ConfigError(
                f"{where}: {name}: expected {{precision: {' or '.join(PRECISIONS)}, "
                f"channels_last: true or false}}, got {pin!r}"
            )
    return dict(pins)


def read_pins(run_dir: str | Path) -> dict[str, Pin]:
    """The pins recorded in ``run_dir`` (none: {})."""
    path = Path(run_dir) / PINS_FILE
    if not path.is_file():
        return {}
    try:
        pins = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    return _checked(pins, str(path))


def population_key(variant: VariantConfig) -> str:
    """Which population a variant's models come from: variants with one train stage share it."""
    return "plain" if variant.train_step is None else content_hash(variant.train_step)


def resolve_pins(
    config: AuditConfig, run_dir: str | Path, added: dict[str, Pin] | None = None
) -> dict[str, Pin]:
    """The run's pins (``run_dir``'s plus ``added``), checked against ``config``; nothing written."""
    path = Path(run_dir) / PINS_FILE
    pins = read_pins(run_dir)
    for name, pin in (added or {}).items():
        if name in pins and pins[name] != pin:
            raise ConfigError(
                f"--pin-precision: {name} is already pinned to {pins[name]} in {path}; "
                "a run keeps one precision per population (use another --out to change it)"
            )
        pins[name] = pin
    variants = {v.name: v for v in config.variants}
    for name in pins:
        if name not in variants:
            raise ConfigError(
                f"{path}: pins variant {name!r}, which the config does not have "
                f"({', '.join(variants)})"
            )
        step = variants[name].train_step
        if step is not None and step.fixed_precision is not None:
            raise ConfigError(f"{path}: {name}: {step.method} always trains in "
                              f"{step.fixed_precision['precision']}; its models need no pin")  # fmt: skip
    by_population: dict[str, tuple[str, Pin]] = {}
    for name, pin in pins.items():
        other = by_population.setdefault(population_key(variants[name]), (name, pin))
        if other[1] != pin:
            raise ConfigError(
                f"{path}: {other[0]} and {name} share their models but are pinned differently "
                f"({other[1]} vs {pin})"
            )
    return pins


def save_pins(run_dir: str | Path, pins: dict[str, Pin]) -> None:
    """Record ``pins`` in ``run_dir`` (atomically); no file for no pins."""
    if pins:
        atomic_write_json(Path(run_dir) / PINS_FILE, pins)


def expand_pins(variants: list[VariantConfig], pins: dict[str, Pin]) -> dict[str, Pin]:
    """``pins`` extended to every variant that shares a pinned variant's population."""
    out = dict(pins)
    for variant in variants:
        for other in variants:
            if other.name in pins and population_key(other) == population_key(variant):
                out.setdefault(variant.name, pins[other.name])
    return out


def slow_pin_warnings(pins: dict[str, Pin], device: str = "auto") -> list[str]:
    """A warning per bf16 pin where this CPU has no fast bf16 kernels (no AVX512-BF16 or AMX):
    whatever of that population is not in the cache would train 10-15x slower than in fp32
    (ResNet-20 on an AVX2-only Zen 3: 21-36 vs 319-342 img/s, docs/results/train_throughput.md)."""
    from privquant.training.device import cpu_has_fast_bf16, resolve_device

    if resolve_device(device).type != "cpu" or cpu_has_fast_bf16():
        return []
    return [
        f"{name}: pinned to bf16, which this CPU has no fast kernels for (no AVX512-BF16 or AMX): "
        "any of its population's models not in the cache trains 10-15x slower than in fp32 here; "
        "`privquant plan` prices it"
        for name, pin in pins.items()
        if pin["precision"] == "bf16"
    ]


def pinned_config(config: AuditConfig, variant: VariantConfig, pins: dict[str, Pin]) -> AuditConfig:
    """``config`` with the pinned precision of ``variant``'s population (as it is, unpinned)."""
    pin = expand_pins(list(config.variants), pins).get(variant.name)
    if pin is None:
        return config
    return config.model_copy(update={"train": config.train.model_copy(update=pin)})
