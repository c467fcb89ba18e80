"""``ghn-init`` command line: apply a GHN to a model, inspect graphs, and manage GHNs.

Each subcommand lives in the module that implements it and registers itself through
``add_subcommand(subparsers)``; this file only assembles them.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Optional, Sequence

import torch

# Modules that contribute subcommands with an ``add_subcommand(subparsers)`` function.
SUBCOMMAND_MODULES: tuple[str, ...] = ("ghn_init.train.cli", "ghn_init.hub.registry", "ghn_init.hub.convert", "ghn_init.hub.verify")


def build_model(name: str, num_classes: Optional[int] = None) -> torch.nn.Module:
    """``resnet50`` (torchvision) or ``timm/convnext_tiny`` (timm), with default arguments."""
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    if name.startswith("timm/"):
        import timm

        return timm.create_model(name[len("timm/") :], **kwargs)
    import torchvision

    try:
        return torchvision.models.get_model(name, **kwargs)
    except ValueError as e:
        raise SystemExit(f"ghn-init: unknown model {name!r}; use a torchvision name or timm/NAME ({e})") from e


def _cmd_apply(args: argparse.Namespace) -> int:
    import ghn_init

    model = build_model(args.model, args.num_classes)
    report = ghn_init.apply(model, args.ghn, predict_classifier=not args.keep_classifier)
    print(report)
    if args.save:
        torch.save(model.state_dict(), args.save)
        print(f"saved the initialized state dict to {args.save}")
    return 0


def _cmd_trace(args: argparse.Namespace) -> int:
    import ghn_init

    graph = ghn_init.trace(build_model(args.model))
    if args.json:
        print(json.dumps(graph.to_dict()))
    else:
        print(graph.summary())
        print(f"tracer: {graph.tracer}")
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ghn-init", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("apply", help="initialize a torchvision/timm model with a GHN and print the report")
    p.add_argument("model", help="torchvision name (resnet50) or timm/NAME")
    p.add_argument("--ghn", default=None, help="GHN source: registry name, path, hf://owner/repo/file, or 'bundled'")
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--keep-classifier", action="store_true", help="leave the classification layer at default init")
    p.add_argument("--save", default=None, help="write the initialized state dict here (torch.save)")
    p.set_defaults(func=_cmd_apply)

    p = sub.add_parser("trace", help="print the GHN graph of a model")
    p.add_argument("model")
    p.add_argument("--json", action="store_true", help="print the graph in the fixture JSON format")
    p.set_defaults(func=_cmd_trace)

    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).add_subcommand(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = make_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
