"""Graph building: from an ``nn.Module`` to the typed DAG a GHN reads."""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import torch
import torch.nn as nn
from torch.nn.parameter import is_lazy

from .. import constants
from ..constants import VIRTUAL_EDGE_CUTOFF
from ..errors import InvalidArgumentError, InvalidArgumentTypeError, TraceError
from ..log import logger
from ..validation import (
    check_choice,
    check_example_inputs,
    check_example_kwargs,
    check_input_size,
    check_positive_int,
)
from . import walk
from .autograd_trace import RawGraph, any_tensor, record
from .builder import build_graph
from .fx_trace import FxCaptureError, record_fx
from .graph import Graph, Node
from .inputs import default_inputs, infer_input_size, input_size_candidates
from .primitives import PRIMITIVES, register_module
from .program import is_exported_program, program_module, record_program

__all__ = [
    "Graph",
    "Node",
    "PRIMITIVES",
    "TRACERS",
    "TraceError",
    "register_module",
    "trace",
    "default_input_size",
    "unwrap",
]

TRACERS = ("auto", "autograd", "fx")
# The ways each tracer tries, in order: autograd on meta tensors, torch.fx on fake tensors, a real forward pass.
_WAYS = {"auto": ("meta", "fx", "real"), "autograd": ("meta", "real"), "fx": ("fx",)}
_WAY_NAMES = {"meta": "meta forward", "fx": "fx capture", "real": "real forward"}
_FALLBACKS = {"fx": "a torch.fx capture on fake tensors", "real": "one real forward pass"}


def default_input_size(model: nn.Module) -> tuple[int, ...]:
    """One input sample's size to record ``model`` with, read off the model (see :func:`.inputs.infer_input_size`)."""
    return infer_input_size(model)


def _describe(args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
    def one(a: Any) -> str:
        return f"tensor of shape {tuple(a.shape)}" if hasattr(a, "shape") else type(a).__name__

    parts = [one(a) for a in args] + [f"{k}={one(v)}" for k, v in kwargs.items()]
    return ", ".join(parts) if parts else "no input"


def _record(
    model: nn.Module, args: tuple, kwargs: dict[str, Any], ways: Sequence[str]
) -> tuple[Optional[RawGraph], list[str]]:
    """Record with each way in turn until one works; (raw graph or None, failed attempts).

    The warning that a way failed and the next is tried is logged only once a later way works: when none does,
    the error lists every attempt, and the same lines logged before it would only repeat it (a CLI user saw a
    3-line error for a wrong channel count).
    """
    errors: list[str] = []
    fallbacks: list[tuple[Any, ...]] = []
    for i, way in enumerate(ways):
        if way == "real" and _real_input_bytes(args, kwargs) > constants.MAX_REAL_INPUT_BYTES:
            gib = _real_input_bytes(args, kwargs) / 2**30
            errors.append(
                f"{_WAY_NAMES[way]}: not run: its zero inputs alone would take {gib:.3g} GiB of memory (the limit is "
                f"{constants.MAX_REAL_INPUT_BYTES / 2**30:.3g} GiB); pass a smaller input_size"
            )
            continue
        try:
            if way == "fx":
                raw = record_fx(model, args=args, kwargs=kwargs)
            else:
                raw = record(model, meta=way == "meta", args=args, kwargs=kwargs)
        except TraceError:  # the model could not be put back as it was: never swallowed
            raise
        except Exception as e:  # noqa: BLE001 - any failure of a user's forward pass means "try the next way"
            errors.append(f"{_WAY_NAMES[way]}: {type(e).__name__}: {e}")
            if i + 1 < len(ways):
                fallbacks.append(
                    (
                        type(model).__name__,
                        _WAY_NAMES[way],
                        type(e).__name__,
                        (str(e).splitlines() or [""])[0][:160],
                        _FALLBACKS[ways[i + 1]],
                    )
                )
            continue
        if not raw.nodes:
            errors.append(f"{_WAY_NAMES[way]}: the forward pass used none of the model's parameters")
            continue
        for fallback in fallbacks:
            logger.warning("%s cannot be recorded with a %s (%s: %s); falling back to %s", *fallback)
        return raw, errors
    return None, errors


def _real_input_bytes(args: Sequence[Any], kwargs: Mapping[str, Any]) -> int:
    """Bytes a real forward pass would allocate for the inputs that are still meta tensors (the default zero
    batches, made real only then; see :func:`.inputs.prepare`)."""
    from torch.utils import _pytree as pytree

    leaves, _ = pytree.tree_flatten((tuple(args), dict(kwargs)))
    return sum(t.numel() * max(t.element_size(), 4) for t in leaves if isinstance(t, torch.Tensor) and t.is_meta)


def _record_sizes(
    model: nn.Module, sizes: Sequence[tuple[int, ...]], ways: Sequence[str]
) -> tuple[Optional[RawGraph], list[str], tuple]:
    """Record with a zero batch of each candidate size in turn (:func:`.inputs.input_size_candidates`).

    With several candidates, each is first tried with the first way alone (a meta forward: a wrong guess
    costs one pass with no arithmetic, and no fallback warning); only if none works there does every way
    run, size by size. Returns (raw graph or None, failed attempts, the inputs used or last tried).
    """
    if len(sizes) > 1:
        for size in sizes:
            args = default_inputs(model, size)
            raw, _ = _record(model, args, {}, ways[:1])
            if raw is not None:
                return raw, [], args
    errors: list[str] = []
    for size in sizes:
        args = default_inputs(model, size)
        raw, attempts = _record(model, args, {}, ways)
        if raw is not None:
            return raw, attempts, args
        errors += [f"input {size}: {a}" for a in attempts] if len(sizes) > 1 else attempts
    return None, errors, default_inputs(model, sizes[0])


def unwrap(model: nn.Module) -> nn.Module:
    """The model a ``torch.compile`` wrapper holds (``_orig_mod``), else ``model``: same parameters, no compiling.

    Example:
        >>> import torch, torch.nn as nn
        >>> m = nn.Linear(2, 2)
        >>> unwrap(torch.compile(m)) is m
        True
    """
    inner = getattr(model, "_orig_mod", None)
    return inner if isinstance(inner, nn.Module) else model


def _parameters_of(model: nn.Module, module_ids: set[int]) -> frozenset[str]:
    """Names of the parameters held directly by the modules in ``module_ids`` (every name of a shared one)."""
    names = []
    for module_name, m in walk.named_modules(model, remove_duplicate=False):
        if id(m) in module_ids:
            names.extend(f"{module_name}.{a}" if module_name else a for a, t in m._parameters.items() if t is not None)
    return frozenset(names)


def trace(
    model: nn.Module,
    input_size: Optional[Sequence[int]] = None,
    *,
    example_inputs: Optional[Sequence[Any]] = None,
    example_kwargs: Optional[Mapping[str, Any]] = None,
    virtual_edge_cutoff: int = VIRTUAL_EDGE_CUTOFF,
    tracer: str = "auto",
) -> Graph:
    """Build the GHN graph of ``model``.

    Ways of recording are tried in turn (with the default ``tracer="auto"``): autograd on meta tensors (no
    arithmetic, no activations), then a torch.fx capture on fake tensors, then one real forward pass on
    copies of the model's tensors on its own device (a warning is logged on the ``"ghn_init"`` logger for
    each fallback). ``Graph.tracer`` says which was used.
    Recording never changes the model: its tensors, buffers, attributes and train/eval modes are as before,
    whether recording succeeds or fails. It also works inside ``torch.inference_mode()``. A
    ``torch.compile``'d model is recorded through the module it wraps (tensor names without ``_orig_mod.``).

    Args:
        model: the model.
        input_size: one input sample's size, e.g. ``(3, 224, 224)``; the model is called with a zero
            batch of 2 (one per positional argument its ``forward`` requires). Default: read off the
            model (stem conv channels, patch embedding / ViT image size, timm config; see
            :func:`ghn_init.graph.inputs.infer_input_size`).
        example_inputs: positional arguments to call the model with instead, e.g. ``(image1, image2)``;
            tensors may sit in nested lists, tuples and dicts. Only their shapes and dtypes matter when
            the model runs on meta tensors.
        example_kwargs: keyword arguments to call the model with, e.g. ``{"pixel_values": x}``.
        virtual_edge_cutoff: longest shortest-path distance that gets a virtual edge.
        tracer: ``"autograd"`` reads autograd (on meta tensors, else a real forward pass); ``"fx"``
            captures the ATen operations with ``torch.fx`` (``make_fx`` on fake tensors) and reads them
            as autograd would (the same graph; see ``docs/tracers.md``); ``"auto"`` (default) tries
            autograd on meta tensors (13x faster than fx in the median), then fx, then a real forward pass.
            A :class:`torch.export.ExportedProgram` is always read with fx, with its own example inputs
            (``input_size`` and ``example_*`` are not used); its graph's parameter nodes refer to
            :func:`~ghn_init.graph.program.program_module` of the program.

    Returns:
        The model's :class:`Graph`.

    Raises:
        InvalidArgumentError: a bad argument, named by ``.argument`` (checked before the model is run): an unknown
            ``tracer``, a malformed ``input_size``, ``example_*`` of the wrong type, a
            ``virtual_edge_cutoff`` below 1, a model without parameters; :class:`InvalidArgumentTypeError` (also a
            ``TypeError``) when ``model`` is not an ``nn.Module``.
        TraceError: no way of recording worked (``.attempts`` lists why), or the model still has
            uninitialized lazy modules.

    Example:
        >>> import ghn_init, torchvision
        >>> graph = ghn_init.trace(torchvision.models.resnet18())
        >>> graph.tracer
        'autograd-meta'
    """
    check_choice("tracer", tracer, TRACERS)
    check_input_size(input_size)
    check_example_inputs(example_inputs)
    check_example_kwargs(example_kwargs)
    check_positive_int("virtual_edge_cutoff", virtual_edge_cutoff)
    if input_size is not None and (example_inputs is not None or example_kwargs is not None):
        raise InvalidArgumentError(  # input_size was ignored without a word
            "input_size is not used when example_inputs/example_kwargs are given (they fix the input); pass one of "
            "them",
            argument="input_size",
            value=input_size,
        )
    if is_exported_program(model):
        return _trace_program(model, tracer, virtual_edge_cutoff)
    if not isinstance(model, nn.Module):
        raise InvalidArgumentTypeError(
            f"model must be a torch.nn.Module, got {type(model).__name__}", argument="model", value=model
        )
    model = unwrap(model)  # a torch.compile'd model is recorded through the model it wraps
    with walk.shared_walks():  # the checks, the recording and the graph building read one walk of the modules
        return _trace_module(model, input_size, example_inputs, example_kwargs, virtual_edge_cutoff, tracer)


def _trace_module(
    model: nn.Module,
    input_size: Optional[Sequence[int]],
    example_inputs: Optional[Sequence[Any]],
    example_kwargs: Optional[Mapping[str, Any]],
    virtual_edge_cutoff: int,
    tracer: str,
) -> Graph:
    """:func:`trace` of an ``nn.Module``, after the argument checks."""
    if not any(True for _ in model.parameters()):
        raise InvalidArgumentError(
            f"{type(model).__name__} has no parameters: there is nothing to initialize", argument="model", value=model
        )
    lazy = any_tensor(model, is_lazy) and [
        n for n, t in (*model.named_parameters(), *model.named_buffers()) if is_lazy(t)
    ]
    if lazy:
        raise TraceError(
            f"{type(model).__name__} has uninitialized lazy tensors ({', '.join(lazy[:3])}): run the model once "
            "on a real input so that its lazy modules (LazyLinear, LazyConv2d, ...) get their shapes, then retry",
            model=type(model).__name__,
        )
    if example_inputs is not None and not isinstance(example_inputs, (tuple, list)):
        example_inputs = (example_inputs,)
    if example_inputs is not None or example_kwargs is not None:
        args, kwargs = tuple(example_inputs or ()), dict(example_kwargs or {})
        raw, errors = _record(model, args, kwargs, _WAYS[tracer])
    else:
        sizes = [tuple(input_size)] if input_size is not None else input_size_candidates(model)
        raw, errors, args = _record_sizes(model, sizes, _WAYS[tracer])
        kwargs = {}
    if raw is None:
        if example_inputs is not None or example_kwargs is not None:
            hint = "Check that example_inputs/example_kwargs are what the model's forward expects."
        else:
            hint = (
                "If the model expects another input size, pass input_size=(C, H, W); if its forward takes "
                "something else than image batches, pass example_inputs=(...) and/or example_kwargs={...}."
            )
        raise TraceError(
            f"could not record {type(model).__name__} called with ({_describe(args, kwargs)}): "
            + "; ".join(" ".join(e.split()) for e in errors)
            + ". "
            + hint,
            model=type(model).__name__,
            attempts=errors,
        )
    graph = build_graph(raw, model, cutoff=virtual_edge_cutoff)
    graph.executed = _parameters_of(model, raw.ran)
    if errors:
        first = errors[0] if len(errors[0]) <= 200 else errors[0][:197] + "..."
        how = "torch.fx" if raw.tracer == "fx" else "a real forward pass"
        graph.notes.append(f"recorded with {how}: " + first)
    return graph


def _trace_program(program: Any, tracer: str, cutoff: int) -> Graph:
    if tracer == "autograd":
        raise InvalidArgumentError(
            "an ExportedProgram is read with tracer='fx' (or 'auto'); it has no autograd forward",
            argument="tracer",
            value=tracer,
        )
    module = program_module(program)
    try:
        raw = record_program(program, module)
    except FxCaptureError as e:
        raise TraceError(f"could not read the ExportedProgram: {e}", model="ExportedProgram", attempts=[str(e)]) from e
    if not raw.nodes:
        raise TraceError("the ExportedProgram uses none of its parameters", model="ExportedProgram", attempts=[])
    graph = build_graph(raw, module, cutoff=cutoff)
    graph.executed = frozenset(n for n, _ in module.named_parameters(remove_duplicate=False))
    return graph
