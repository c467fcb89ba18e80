"""The ``ghn-init`` command line (also ``python -m ghn_init``).

Each subcommand lives in its own module of this package and registers itself with
``add_subcommand(subparsers)``; library modules hold no command-line code. Errors that ghn-init
raises on purpose, and bad arguments, end in one line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

# Modules of this package that contribute subcommands, in the order ``--help`` lists them.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "ghn_init.cli.apply",
    "ghn_init.cli.list",
    "ghn_init.cli.convert",
    "ghn_init.cli.verify",
    "ghn_init.cli.train",
    "ghn_init.cli.compare",
)

EXIT_ERROR = 2  # bad input or a failure ghn-init reports (1 is kept for "ran, but a check failed")
EXIT_INTERRUPTED = 130


def make_parser() -> argparse.ArgumentParser:
    """The full ``ghn-init`` argument parser with every subcommand."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="ghn-init", description="Initialize PyTorch models with parameters predicted by a Graph HyperNetwork."
    )
    parser.add_argument("--version", action="version", version=f"ghn-init {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).add_subcommand(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``ghn-init``; returns the exit code (0 ok, 1 a check failed, 2 an error, 130 interrupted)."""
    from ..errors import GHNInitError

    args = make_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("ghn-init: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (GHNInitError, OSError, ValueError, KeyError, TypeError) as e:
        message = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        print(f"ghn-init {args.command}: error: {message}", file=sys.stderr)
        return EXIT_ERROR
