"""The tuned allocator: heavy commands re-exec with glibc's malloc tuned, the record says so, and
nothing computed changes (the allocator places tensors, it does not change what they hold)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import result_numbers
from privquant.errors import ConfigError
from privquant.machine import TUNED_MALLOC, malloc_setting, tuned_malloc_environ

GLIBC = ("glibc", "2.36")


def test_tunables_are_added_on_glibc_only() -> None:
    assert tuned_malloc_environ({"A": "1"}, GLIBC) == {"A": "1", "GLIBC_TUNABLES": TUNED_MALLOC}
    assert tuned_malloc_environ({}, ("", "")) is None  # musl, macOS: nothing to tune this way
    assert tuned_malloc_environ({}, ("glibc", "2.17")) is None  # before tunables existed


def test_the_users_choice_stands() -> None:
    assert tuned_malloc_environ({"PRIVQUANT_MALLOC": "system"}, GLIBC) is None
    mine = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}
    assert tuned_malloc_environ(mine, GLIBC) is None  # and a re-exec stops after one round
    other = tuned_malloc_environ({"GLIBC_TUNABLES": "glibc.rtld.optional_static_tls=1"}, GLIBC)
    assert other is not None
    assert other["GLIBC_TUNABLES"] == f"glibc.rtld.optional_static_tls=1:{TUNED_MALLOC}"
    with pytest.raises(ConfigError, match="PRIVQUANT_MALLOC='fast'.*'tuned'.*'system'"):
        tuned_malloc_environ({"PRIVQUANT_MALLOC": "fast"}, GLIBC)


def test_the_record_names_the_malloc_tunables_only() -> None:
    assert malloc_setting({}) == "system"
    env = {"GLIBC_TUNABLES": f"glibc.rtld.optional_static_tls=1:{TUNED_MALLOC}"}
    assert malloc_setting(env) == TUNED_MALLOC


def test_the_heavy_commands_are_commands() -> None:
    import argparse

    from privquant.cli import HEAVY, build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) >= HEAVY and {"compare", "merge", "attack"}.isdisjoint(HEAVY)


def test_the_program_decides_how_to_start_before_loading_torch() -> None:
    # A heavy command starts twice (the second time with malloc tuned): the first start must not
    # pay for torch and the commands (4-6 s on a 2-core host), nor must `--version`.
    probe = ("import sys, privquant.launch, privquant.malloc; "
             "print(sorted(m for m in ('torch', 'numpy', 'scipy', 'privquant.cli') if m in sys.modules))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    version = subprocess.run([sys.executable, "-X", "importtime", "-m", "privquant", "--version"],
                             capture_output=True, text=True, check=True)  # fmt: skip
    loaded = {line.rsplit("|", 1)[-1].strip() for line in version.stderr.splitlines()}
    assert version.stdout.strip() == "privquant 0.1.0" and "privquant" in loaded
    assert "torch" not in loaded and "numpy" not in loaded


TINY = {
    "name": "malloc",
    "data": {"name": "digits", "pool_size": 200, "reference_size": 50},
    "model": {"name": "mlp", "options": {"hidden": [64]}},
    "train": {"epochs": 5, "batch_size": 32, "optimizer": "adam", "lr": 0.003},
    "population": {"n_models": 3, "queries": 1},
    "variants": [{"name": "fp32", "method": "none"}],
    "attacks": ["loss"],
    "bootstrap": 10,
}


def _run(tmp: Path, name: str, switch: str) -> Path:
    config = tmp / "c.yaml"
    config.write_text(yaml.safe_dump(TINY))
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    env.update(PRIVQUANT_MALLOC=switch, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "privquant", "run", str(config), "--out", str(tmp / name)],
                          capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return tmp / name


@pytest.mark.slow
@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's tunables only")
def test_a_run_uses_the_tuned_allocator_and_computes_the_same_numbers(tmp_path: Path) -> None:
    tuned, system = _run(tmp_path, "tuned", "tuned"), _run(tmp_path, "system", "system")
    machine = {n: json.loads((r / "results.json").read_text())["machine"] for n, r in
               (("tuned", tuned), ("system", system))}  # fmt: skip
    assert machine["tuned"]["malloc"] == TUNED_MALLOC and machine["system"]["malloc"] == "system"
    assert result_numbers(tuned) == result_numbers(system)
