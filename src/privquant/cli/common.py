"""Flag helpers shared by the commands: config-field flags, counts, bits, --out checks."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from privquant.errors import PrivquantError


def _from_field(
    parser: argparse.ArgumentParser, flag: str, model: type, name: str, **kw: Any
) -> None:
    """A flag whose default, choices and help come from a config field, so they never drift."""
    import typing

    info = model.model_fields[name]
    options: dict[str, Any] = {"default": info.default, "help": info.description}
    args = typing.get_args(info.annotation)
    if typing.get_origin(info.annotation) is typing.Literal:
        options["choices"] = list(args)
    elif info.annotation in (int, float, str):
        options["type"] = info.annotation
    options.update(kw)
    parser.add_argument(flag, **options)
    CONFIG_FLAGS.append((parser.prog, flag, model, name))


CONFIG_FLAGS: list[
    tuple[str, str, type, str]
] = []  # (command, flag, config model, field): tests read it


def yaml_flag(text: str, flag: str, expect: type | None = None) -> Any:
    """A flag given as YAML text or as the path of a YAML file; ``expect``: the type it must be.
    Invalid YAML and the wrong type are one-line errors that name the flag."""
    import yaml

    from privquant.errors import ConfigError
    from privquant.pipeline.config import yaml_problem

    source = Path(text) if Path(text).is_file() else None
    try:
        value = yaml.safe_load(source.read_text() if source else text)
    except yaml.YAMLError as e:
        where = f"{flag} ({source})" if source else flag
        raise ConfigError(f"{where}: not valid YAML ({yaml_problem(e)})") from None
    if expect is not None and not isinstance(value, expect):
        kind = "a mapping" if expect is dict else f"a {expect.__name__}"
        raise ConfigError(f"{flag}: expected {kind}, got {value!r}")
    return value


def _at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def _count(text: str) -> int:
    """argparse type: a non-negative integer (a negative row count would silently mean N - k)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a count >= 0, got {value}")
    return value


def _bits(text: str) -> float:
    """argparse type: '1.58' (ternary) or a whole number of bits."""
    try:
        return float(text) if text == "1.58" else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 1.58 or 2..8, got {text!r}") from None


def _bits_argument(q: argparse.ArgumentParser, help_text: str) -> None:
    from privquant.quant import ALLOWED_BITS

    q.add_argument(
        "--bits", type=_bits, default=4, choices=ALLOWED_BITS, metavar="{1.58,2..8}", help=help_text
    )


FILE_OUTPUTS = ("signals",)  # commands whose --out is a file; every other --out is a folder


def check_out(command: str, out: str | None) -> None:
    """Refuse an unusable --out before any work (a trained model must never be lost at the end)."""
    if not out:
        return
    path = Path(out)
    want_file = command in FILE_OUTPUTS
    if path.exists() and path.is_dir() == want_file:
        kind = "a folder" if path.is_dir() else "a file"
        raise PrivquantError(
            f"--out {out}: is {kind}; expected {'a file path' if want_file else 'a folder'}"
        )
    parent = path.parent if want_file or not path.exists() else path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise PrivquantError(f"--out {out}: cannot write under {parent} (not a writable folder)")
