"""The ``privquant`` command: one module per command, each with ``add_parser`` and its handler.

Flags that mirror a config field take their default, choices and help from it
(:func:`privquant.cli.common._from_field`); the library does the work, the modules parse flags
and print.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from pydantic import ValidationError

import privquant
from privquant.cli import (
    attack,
    compare,
    data,
    deploy,
    evaluate,
    merge,
    plan,
    run,
    signals,
    train,
    tune,
)
from privquant.cli.common import CONFIG_FLAGS, check_out
from privquant.errors import PrivquantError
from privquant.launch import HEAVY, reexec_with_tuned_malloc

COMMANDS = (data, train, attack, signals, deploy, evaluate, run, plan, compare, merge, tune)

__all__ = ["CONFIG_FLAGS", "HEAVY", "build_parser", "check_out", "main"]


def build_parser() -> argparse.ArgumentParser:
    CONFIG_FLAGS.clear()
    p = argparse.ArgumentParser(
        prog="privquant",
        description="Quantize neural networks to defend them against membership inference, "
        "and audit the result.",
    )
    p.add_argument("--version", action="version", version=f"privquant {privquant.__version__}")
    p.add_argument(
        "--debug",
        action="store_true",
        help="show the Python traceback of an error (for bug reports)",
    )
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:  # the program itself (``python -m privquant.cli``), not a caller's process
        argv = sys.argv[1:]
        reexec_with_tuned_malloc(list(argv))
    args = build_parser().parse_args(argv)
    try:
        check_out(args.command, getattr(args, "out", None))
        return int(args.func(args))
    except KeyboardInterrupt:
        print(
            "privquant: interrupted; rerun the same command to resume from the cache",
            file=sys.stderr,
        )
        return 130
    except BrokenPipeError:  # `privquant compare ... | head -1`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except ValidationError as e:  # a flag's value failed a config model's rule: name the flag
        if args.debug:
            raise
        for err in e.errors():
            flag = "--" + str(err["loc"][-1]).replace("_", "-") if err["loc"] else "input"
            print(
                f"privquant: error: {flag}: {err['msg']} (got {err.get('input')!r})",
                file=sys.stderr,
            )
        return 2
    except PrivquantError as e:
        if args.debug:
            raise
        print(f"privquant: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        # Anything else the inputs can provoke (a bad file, a full disk, a wrong shape) or a
        # bug: one line naming what went wrong; the traceback is for --debug.
        if args.debug:
            raise
        where = f" ({e.filename})" if isinstance(e, OSError) and e.filename else ""
        print(f"privquant: error: {type(e).__name__}{where}: {e}  [--debug shows the traceback]",
              file=sys.stderr)  # fmt: skip
        return 2
