"""Graph building: from an ``nn.Module`` to the typed DAG a GHN reads."""

from __future__ import annotations

from typing import Optional, Sequence

import torch.nn as nn
import torchvision

from ..constants import DEFAULT_IMAGE_SIDE, INCEPTION_IMAGE_SIDE, VIRTUAL_EDGE_CUTOFF
from ..errors import TraceError
from .autograd_trace import record
from .builder import build_graph
from .graph import Graph, Node
from .primitives import PRIMITIVES, register_module

__all__ = ["Graph", "Node", "PRIMITIVES", "TraceError", "register_module", "trace", "default_input_size"]


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
) -> Graph:
    """Build the GHN graph of ``model``.

    The forward pass is recorded on meta tensors (no arithmetic, no activations); models that cannot
    run on meta tensors are recorded with one real forward pass of a batch of 2 on their own device.
    ``Graph.tracer`` says which was used. The model's tensors and train/eval modes are unchanged.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
    if not any(True for _ in model.parameters()):
        raise ValueError(f"{type(model).__name__} has no parameters: there is nothing to initialize")
    size = tuple(input_size) if input_size is not None else default_input_size(model)
    errors = []
    for meta in (True, False):
        try:
            raw = record(model, size, meta=meta)
        except Exception as e:  # noqa: BLE001 - any failure of a user's forward pass means "try the next way"
            errors.append(f"{'meta' if meta else 'real'} forward: {type(e).__name__}: {e}")
            continue
        if not raw.nodes:
            errors.append("the forward pass used none of the model's parameters")
            continue
        graph = build_graph(raw, model, cutoff=virtual_edge_cutoff)
        if not meta:
            graph.notes.append("recorded with a real forward pass: " + errors[0])
        return graph
    raise TraceError(
        f"could not record {type(model).__name__} with an input of shape (2, {', '.join(map(str, size))}):\n  "
        + "\n  ".join(errors)
        + "\nIf the model expects another input size, pass input_size=(C, H, W).",
        model=type(model).__name__,
        attempts=errors,
    )
