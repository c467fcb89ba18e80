"""``ghn-init apply`` and ``ghn-init trace``: one model, by name."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..graph import TRACERS
from ..postprocess import POSTPROCESS_PARTS
from .types import is_out_of_memory, positive_int


def json_object(text: str) -> dict[str, Any]:
    """argparse type: a JSON object such as ``'{"drop_rate": 0.1}'``."""
    try:
        value = json.loads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON ({e}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object like '{{\"drop_rate\": 0.1}}', got {text!r}")
    return value


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """The options that say which model to build and how to record it (shared by apply and trace)."""
    p.add_argument("model", help="torchvision name (resnet50) or timm/NAME")
    p.add_argument(
        "--num-classes",
        type=positive_int,
        default=None,
        help="classes of the model's classifier (default: the model's own)",
    )
    p.add_argument(
        "--in-chans", type=positive_int, default=None, help="input channels (timm models; default: the model's own)"
    )
    p.add_argument(
        "--input-size",
        type=positive_int,
        nargs=3,
        metavar=("C", "H", "W"),
        default=None,
        help="input size to record the model with (default: read from the model)",
    )
    p.add_argument("--tracer", choices=TRACERS, default="auto", help="how the graph is recorded (default %(default)s)")
    p.add_argument(
        "--model-kwargs",
        type=json_object,
        default=None,
        metavar="JSON",
        help="more constructor arguments as a JSON object, e.g. '{\"drop_rate\": 0.1}' (default: none)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed torch before building the model (reproducible output; default: unseeded)",
    )


def build_model(args: argparse.Namespace) -> tuple[Any, Any]:
    """The model the arguments describe and the input size to record it with (None: the model's own)."""
    import torch

    from ..models import TIMM_PREFIX, create_model

    kwargs = dict(args.model_kwargs or {})
    for flag, key, value in (
        ("--num-classes", "num_classes", args.num_classes),
        ("--in-chans", "in_chans", args.in_chans),
    ):
        if value is None:
            continue
        if key in kwargs and kwargs[key] != value:
            raise ValueError(f"{flag} {value} contradicts {key}={kwargs[key]!r} in --model-kwargs; give it once")
        kwargs[key] = value
    if "in_chans" in kwargs and not args.model.startswith(TIMM_PREFIX):
        raise ValueError("--in-chans / in_chans applies to timm models (timm/NAME) only")
    if args.seed is not None:
        from ..validation import check_seed

        check_seed("--seed", args.seed)
        torch.manual_seed(args.seed)
    try:
        model = create_model(args.model, **kwargs)
    except TypeError as e:  # an argument the constructor does not take
        raise ValueError(f"cannot build {args.model} with {kwargs}: {e}") from e
    except (MemoryError, RuntimeError) as e:
        if not is_out_of_memory(e):
            raise
        from ..errors import InvalidArgumentError

        what = ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) or "its defaults"
        raise InvalidArgumentError(
            f"cannot build {args.model} with {what}: not enough memory for its tensors; pass smaller sizes",
            argument="num_classes" if args.num_classes is not None else "model_kwargs",
            value=kwargs,
        ) from e
    return model, tuple(args.input_size) if args.input_size else None


def _cmd_apply(args: argparse.Namespace) -> int:
    import torch

    from .. import apply
    from ..saving import check_save_path, save_safetensors

    if args.save:
        check_save_path(args.save)  # fail before the work, not after it
    model, size = build_model(args)
    report = apply(
        model,
        args.ghn,
        predict_classifier=not args.keep_classifier,
        input_size=size,
        tracer=args.tracer,
        postprocess=args.postprocess,
    )
    if args.save:
        if str(args.save).endswith(".safetensors"):
            save_safetensors(model, args.save, report)
        else:
            torch.save(model.state_dict(), args.save)
    if args.json:
        data = report.to_dict()
        if args.save:
            data["saved_to"] = str(args.save)
        print(json.dumps(data, indent=1))
        return 0
    print(report)
    if args.save:
        kind = "safetensors, with the report as metadata" if str(args.save).endswith(".safetensors") else "torch.save"
        print(f"saved the initialized state dict to {args.save} ({kind})")
    return 0


def _cmd_trace(args: argparse.Namespace) -> int:
    from .. import trace

    model, size = build_model(args)
    graph = trace(model, size, tracer=args.tracer)
    if args.json:
        print(json.dumps(graph.to_dict()))
    else:
        print(graph.summary())
        print(f"tracer: {graph.tracer}")
    return 0


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("apply", help="initialize a torchvision/timm model with a GHN and print the report")
    add_model_arguments(p)
    p.add_argument(
        "--ghn",
        default=None,
        help="GHN source: registry name, path, hf://owner/repo/file, or 'bundled' (default: the registry's "
        "default GHN)",
    )
    p.add_argument("--keep-classifier", action="store_true", help="leave the classification layer at default init")
    p.add_argument(
        "--save",
        default=None,
        help="write the initialized state dict here: *.safetensors (report in the metadata), otherwise torch.save "
        "(default: not saved)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--postprocess",
        default="default",
        help="post-processing of the predictions: default (the GHN's own), none, or "
        f"{', '.join(POSTPROCESS_PARTS)} joined by '+' (default %(default)s)",
    )
    p.set_defaults(func=_cmd_apply)

    p = subparsers.add_parser("trace", help="print the GHN graph of a model")
    add_model_arguments(p)
    p.add_argument("--json", action="store_true", help="print the graph in the fixture JSON format")
    p.set_defaults(func=_cmd_trace)
