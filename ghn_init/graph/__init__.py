"""Graph building: from an ``nn.Module`` to the typed DAG a GHN reads."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch.nn as nn
import torchvision

from ..constants import DEFAULT_IMAGE_SIDE, INCEPTION_IMAGE_SIDE, VIRTUAL_EDGE_CUTOFF
from ..errors import TraceError
from .autograd_trace import record
from .builder import build_graph
from .fx_trace import FxCaptureError, is_exported_program, program_module, record_fx, record_program
from .graph import Graph, Node
from .primitives import PRIMITIVES, register_module

__all__ = ["Graph", "Node", "PRIMITIVES", "TRACERS", "TraceError", "register_module", "trace", "default_input_size"]

TRACERS = ("auto", "autograd", "fx")


def default_input_size(model: nn.Module) -> tuple[int, ...]:
    """(C, H, W) to record the model with: ``model.expected_input_sz`` if set, 299 for Inception-v3,
    the input size of a timm model's pretrained config, else 224."""
    size = getattr(model, "expected_input_sz", None)
    if size is None:
        if isinstance(model, torchvision.models.Inception3):
            size = INCEPTION_IMAGE_SIDE
        else:
            cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
            size = tuple(cfg["input_size"]) if isinstance(cfg, dict) and "input_size" in cfg else DEFAULT_IMAGE_SIDE
    return tuple(size) if isinstance(size, (tuple, list)) else (3, int(size), int(size))


def trace(
    model: nn.Module,
    input_size: Optional[Sequence[int]] = None,
    *,
    virtual_edge_cutoff: int = VIRTUAL_EDGE_CUTOFF,
    tracer: str = "auto",
) -> Graph:
    """Build the GHN graph of ``model``.

    The forward pass is recorded on meta tensors (no arithmetic, no activations); models that cannot
    run on meta tensors are recorded with one real forward pass of a batch of 2 on their own device.
    ``Graph.tracer`` says which was used. The model's tensors and train/eval modes are unchanged.

    ``tracer`` picks how: ``"autograd"`` reads autograd (on meta tensors, else a real forward pass),
    ``"fx"`` captures ATen operations with ``torch.fx`` (``make_fx`` on fake tensors) and reads them as
    autograd would (same graph; see ``docs/tracers.md``), ``"auto"`` (default) tries autograd on meta
    tensors (10-20x faster on every measured model), then fx, then a real forward pass. A
    :class:`torch.export.ExportedProgram` is always read with fx, with its own example inputs
    (``input_size`` is not used); its graph's parameter nodes refer to
    :func:`~ghn_init.graph.fx_trace.program_module` of the program.
    """
    if tracer not in TRACERS:
        raise ValueError(f"unknown tracer {tracer!r}; choose one of {', '.join(TRACERS)}")
    if is_exported_program(model):
        return _trace_program(model, tracer, virtual_edge_cutoff)
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
    if not any(True for _ in model.parameters()):
        raise ValueError(f"{type(model).__name__} has no parameters: there is nothing to initialize")
    size = tuple(input_size) if input_size is not None else default_input_size(model)
    errors = []
    ways = {"auto": ("meta", "fx", "real"), "autograd": ("meta", "real"), "fx": ("fx",)}[tracer]
    for way in ways:
        try:
            raw = record_fx(model, size) if way == "fx" else record(model, size, meta=way == "meta")
        except Exception as e:  # noqa: BLE001 - any failure of a user's forward pass means "try the next way"
            errors.append(f"{'fx capture' if way == 'fx' else way + ' forward'}: {type(e).__name__}: {e}")
            continue
        if not raw.nodes:
            errors.append("the forward pass used none of the model's parameters")
            continue
        graph = build_graph(raw, model, cutoff=virtual_edge_cutoff)
        if errors:
            graph.notes.append(f"recorded with {'fx' if way == 'fx' else 'a real forward pass'}: " + errors[0])
        return graph
    raise TraceError(
        f"could not record {type(model).__name__} with an input of shape (2, {', '.join(map(str, size))}):\n  "
        + "\n  ".join(errors)
        + "\nIf the model expects another input size, pass input_size=(C, H, W).",
        model=type(model).__name__,
        attempts=errors,
    )


def _trace_program(program: Any, tracer: str, cutoff: int) -> Graph:
    if tracer == "autograd":
        raise ValueError("an ExportedProgram is read with tracer='fx' (or 'auto'); it has no autograd forward")
    module = program_module(program)
    try:
        raw = record_program(program, module)
    except FxCaptureError as e:
        raise TraceError(f"could not read the ExportedProgram: {e}", model="ExportedProgram", attempts=[str(e)]) from e
    if not raw.nodes:
        raise TraceError("the ExportedProgram uses none of its parameters", model="ExportedProgram", attempts=[])
    return build_graph(raw, module, cutoff=cutoff)
