"""The ``ghn-init`` command line (also ``python -m ghn_init``).

Each subcommand lives in its own module of this package and registers itself with
``add_subcommand(subparsers)``; library modules hold no command-line code. Every call builds the whole
parser, so a subcommand module imports at its top only what its options need (nothing that imports
torchvision, timm or matplotlib): what a subcommand runs is imported when it runs. Bad arguments and every error
end in one line on stderr and a non-zero exit code, never a traceback (set ``GHN_INIT_DEBUG=1`` to see one):

====  ==================================================================================
code  meaning
====  ==================================================================================
0     success
1     ran, but a check failed (``ghn-init verify``: a norm differs from the published one)
2     bad arguments or input, or an error ghn-init reports (missing file, offline, ...)
3     an unexpected internal error (a bug: please report it with ``GHN_INIT_DEBUG=1`` output)
130   interrupted (Ctrl-C)
====  ==================================================================================
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import NoReturn, Optional, Sequence

# Modules of this package that contribute subcommands, in the order ``--help`` lists them.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "ghn_init.cli.apply",
    "ghn_init.cli.list",
    "ghn_init.cli.convert",
    "ghn_init.cli.push",
    "ghn_init.cli.verify",
    "ghn_init.cli.train",
    "ghn_init.cli.compare",
)

EXIT_CHECK_FAILED = 1
EXIT_ERROR = 2  # bad input or a failure ghn-init reports (1 is kept for "ran, but a check failed")
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr (exit code 2), pointing to ``--help``."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def make_parser() -> argparse.ArgumentParser:
    """The full ``ghn-init`` argument parser with every subcommand."""
    from .. import __version__

    parser = OneLineParser(
        prog="ghn-init",
        description="Initialize PyTorch models with parameters predicted by a Graph HyperNetwork.",
        epilog="exit codes: 0 ok, 1 a check failed (verify), 2 bad input or an error, 3 internal error, "
        "130 interrupted",
    )
    parser.add_argument("--version", action="version", version=f"ghn-init {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).add_subcommand(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``ghn-init``; returns the exit code (0 ok, 1 a check failed, 2 an error, 3 internal error, 130 interrupted).

    Example:
        >>> from ghn_init.cli import main
        >>> main(["list", "--json"])  # doctest: +SKIP
        0
    """
    from ..errors import GHNInitError

    try:
        parser = make_parser()
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a usage error already printed as one line
        return e.code if isinstance(e.code, int) else EXIT_ERROR
    debug = os.environ.get("GHN_INIT_DEBUG", "") not in ("", "0")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("ghn-init: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (GHNInitError, OSError, ValueError) as e:  # bad input; KeyError/TypeError & co. are bugs (exit 3)
        if debug:
            raise
        print(f"ghn-init {args.command}: error: {_flagged(e, parser, args.command)}{_one_line(e)}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as e:  # noqa: BLE001 - a bug: still one line, with how to get the traceback
        if debug:
            raise
        from .types import is_out_of_memory

        if is_out_of_memory(e):  # sizes too large for this machine: the input's fault, not a bug
            print(
                f"ghn-init {args.command}: error: out of memory ({_one_line(e)[:200]}); pass smaller sizes",
                file=sys.stderr,
            )
            return EXIT_ERROR
        print(
            f"ghn-init {args.command}: internal error: {type(e).__name__}: {_one_line(e)} "
            "(run again with GHN_INIT_DEBUG=1 for the traceback, and please report it)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


def _flagged(e: BaseException, parser: argparse.ArgumentParser, command: str) -> str:
    """``"argument --steps: "`` for an :class:`InvalidArgumentError` about an option of ``command``, else ``""``.

    The library names its arguments as Python does (``batch_size``); a command-line user needs the flag.
    """
    from ..errors import InvalidArgumentError

    argument = getattr(e, "argument", "") if isinstance(e, InvalidArgumentError) else ""
    if not argument:
        return ""
    dest = argument.lstrip("-").replace("-", "_")
    for group in parser._subparsers._group_actions if parser._subparsers else ():
        sub = getattr(group, "choices", {}).get(command)
        for action in sub._actions if sub is not None else ():
            if action.dest == dest and not isinstance(action, argparse._HelpAction):
                flags = [s for s in action.option_strings if not s.startswith("--no-")] or action.option_strings
                name = flags[-1] if flags else (action.metavar or action.dest.upper())
                return f"argument {name}: "
    return ""


def _one_line(e: BaseException) -> str:
    message = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return "; ".join(lines) if lines else type(e).__name__
