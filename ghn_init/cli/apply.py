"""``ghn-init apply`` and ``ghn-init trace``: one model, by name."""

from __future__ import annotations

import argparse
import json


def _cmd_apply(args: argparse.Namespace) -> int:
    import torch

    from .. import apply
    from ..models import create_model

    kwargs = {} if args.num_classes is None else {"num_classes": args.num_classes}
    model = create_model(args.model, **kwargs)
    report = apply(model, args.ghn, predict_classifier=not args.keep_classifier, tracer=args.tracer)
    print(report)
    if args.save:
        torch.save(model.state_dict(), args.save)
        print(f"saved the initialized state dict to {args.save}")
    return 0


def _cmd_trace(args: argparse.Namespace) -> int:
    from .. import trace
    from ..models import create_model

    graph = trace(create_model(args.model), tracer=args.tracer)
    if args.json:
        print(json.dumps(graph.to_dict()))
    else:
        print(graph.summary())
        print(f"tracer: {graph.tracer}")
    return 0


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("apply", help="initialize a torchvision/timm model with a GHN and print the report")
    p.add_argument("model", help="torchvision name (resnet50) or timm/NAME")
    p.add_argument("--ghn", default=None, help="GHN source: registry name, path, hf://owner/repo/file, or 'bundled'")
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--keep-classifier", action="store_true", help="leave the classification layer at default init")
    p.add_argument("--save", default=None, help="write the initialized state dict here (torch.save)")
    p.add_argument("--tracer", choices=("auto", "autograd", "fx"), default="auto", help="how the graph is recorded")
    p.set_defaults(func=_cmd_apply)

    p = subparsers.add_parser("trace", help="print the GHN graph of a model")
    p.add_argument("model", help="torchvision name (resnet50) or timm/NAME")
    p.add_argument("--json", action="store_true", help="print the graph in the fixture JSON format")
    p.add_argument("--tracer", choices=("auto", "autograd", "fx"), default="auto", help="how the graph is recorded")
    p.set_defaults(func=_cmd_trace)
