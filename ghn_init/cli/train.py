"""``ghn-init train``: the command-line face of :func:`ghn_init.train.train`.

Options are generated from :class:`TrainConfig`'s fields, so the CLI and the Python API
cannot drift apart.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
import typing
from typing import Any

from ..train.trainer import TrainConfig

HIDDEN_FIELDS = frozenset({"output", "command", "progress"})


def _option_type(annotation: Any) -> Any:
    """The scalar type argparse should parse for a (possibly Optional) field annotation."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if typing.get_origin(annotation) is typing.Union else annotation


def _default_text(default: Any) -> str:
    """`` (default: X)`` for the help of an option (a None default is described by the field's own help)."""
    if default is None:
        return ""
    if isinstance(default, bool):
        return f" (default: {'on' if default else 'off'})"
    if isinstance(default, tuple):
        return f" (default: {' '.join(str(v) for v in default)})"
    return f" (default: {default})"


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train or fine-tune a GHN on images and random architectures",
        description="Train (or resume, if OUTPUT has a checkpoint) a GHN, then export it to OUTPUT/ghn.",
    )
    parser.add_argument("output", help=TrainConfig.__dataclass_fields__["output"].metadata["help"])
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh in an OUTPUT that holds an earlier run (its checkpoint, metrics log and ghn/ are removed "
        "first); default: resume it, or extend it when --steps is larger",
    )
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if f.name in HIDDEN_FIELDS:
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = _option_type(hints[f.name])
        help_text = f.metadata["help"] + _default_text(f.default)
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=help_text)
        elif typing.get_origin(kind) is tuple:
            parser.add_argument(
                flag, type=int, nargs=4, metavar=("OUT", "IN", "K", "K"), default=f.default, help=help_text
            )
        else:
            parser.add_argument(flag, type=kind, default=f.default, help=help_text)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from ..train.trainer import train

    settings = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if f.name != "command"}
    config = TrainConfig(**settings, command=shlex.join(["ghn-init", *sys.argv[1:]]))
    folder = train(config, overwrite=args.overwrite)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun every rank runs this; one line is enough
        print(f"exported the trained GHN to {folder}; publish it with `ghn-init push {folder} OWNER/NAME`")
    return 0
