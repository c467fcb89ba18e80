"""Reading a :class:`torch.export.ExportedProgram`: its graph, and a module tree to write predictions into.

An exported program has no ``nn.Module`` classes left, only its ``state_dict`` and, on each graph node,
the exporter's ``nn_module_stack``. :func:`program_module` rebuilds a module tree of the original layer
classes holding the program's own tensors (so the graph builder sees ``nn.Conv2d``, ``nn.LayerNorm``, ...
and writing predictions into the tree writes them into the program), and :func:`record_program` reads
the program's graph with the fx tracer (:mod:`ghn_init.graph.fx_trace`).
"""

from __future__ import annotations

import importlib
import weakref
from typing import Any

import torch
from torch import fx, nn

from .autograd_trace import RawGraph, owner_map
from .fx_trace import FxCaptureError, capture, model_tensors, read_fx

__all__ = ["is_exported_program", "program_module", "record_program"]


def _resolve(path: str) -> type | None:
    module_name, _, cls_name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError, ValueError):
        return None
    return cls if isinstance(cls, type) and issubclass(cls, nn.Module) else None


def _module_classes(ep: Any) -> dict[str, type]:
    """Module path -> class, from the ``nn_module_stack`` the exporter stored on each node."""
    classes: dict[str, type] = {}
    for node in ep.graph.nodes:
        for path, cls in (node.meta.get("nn_module_stack") or {}).values():
            if path in classes:
                continue
            if isinstance(cls, str):
                cls = _resolve(cls)
            if isinstance(cls, type):
                classes[path.replace("L['self'].", "").replace("L__self__.", "")] = cls
    return classes


def _layer_of(op_name: str, ndim: int) -> type | None:
    """The layer class whose forward is this ATen call, for a weight of ``ndim`` dimensions."""
    if op_name in ("conv1d", "conv2d", "conv3d", "convolution"):
        return {3: nn.Conv1d, 4: nn.Conv2d, 5: nn.Conv3d}.get(ndim)
    return {
        "linear": nn.Linear,
        "layer_norm": nn.LayerNorm,
        "native_layer_norm": nn.LayerNorm,
        "group_norm": nn.GroupNorm,
        "embedding": nn.Embedding,
    }.get(op_name)


def _parameter_uses(ep: Any) -> tuple[dict[str, dict[str, Any]], dict[str, type]]:
    """From the program's ATen calls: weight name -> groups/dilation of its convolution (the GHN's conv
    kind depends on them), and module path -> layer class for modules whose weight is used by a
    layer's operation (``nn.MultiheadAttention`` calls its ``out_proj`` weight with ``F.linear``
    without calling the submodule, so the exporter records no class for it)."""
    placeholders = {spec.arg.name: spec.target for spec in ep.graph_signature.input_specs if spec.target}
    settings: dict[str, dict[str, Any]] = {}
    layers: dict[str, type] = {}
    for node in ep.graph.nodes:
        if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload):
            continue
        schema = [a.name for a in node.target._schema.arguments]
        bound = {schema[i]: v for i, v in enumerate(node.args) if i < len(schema)} | dict(node.kwargs)
        weight = bound.get("weight")
        if not isinstance(weight, fx.Node) or weight.name not in placeholders:
            continue
        name = placeholders[weight.name]
        val = weight.meta.get("val")
        op_name = node.target._schema.name.split("::")[-1]
        layer = _layer_of(op_name, val.dim() if isinstance(val, torch.Tensor) else 0)
        if layer is not None and name.endswith(".weight"):
            layers.setdefault(name[: -len(".weight")], layer)
        if layer in (nn.Conv1d, nn.Conv2d, nn.Conv3d):
            dims = val.dim() - 2
            dilation = bound.get("dilation", 1)
            dilation = tuple(dilation) if isinstance(dilation, (list, tuple)) else (dilation,) * dims
            settings[name] = {"groups": int(bound.get("groups", 1)), "dilation": dilation}
    return settings, layers


def is_exported_program(obj: Any) -> bool:
    """Whether ``obj`` is a :class:`torch.export.ExportedProgram` (without importing torch.export)."""
    return any(c.__name__ == "ExportedProgram" and c.__module__.startswith("torch.export") for c in type(obj).__mro__)


_PROGRAM_MODULES: weakref.WeakKeyDictionary[Any, nn.Module] = weakref.WeakKeyDictionary()


def program_module(ep: Any) -> nn.Module:
    """An ``nn.Module`` tree holding an ExportedProgram's parameters, with the original module classes.

    Each submodule is an instance of the class the exporter recorded for it (``nn.Conv2d``,
    ``nn.BatchNorm2d``, ...), built without calling its ``__init__``; its parameters are *the same
    tensors* as in ``ep.state_dict``, so writing predictions into this module writes them into the
    program. It has no ``forward``: use the program itself to run the model.

    Args:
        ep: a :class:`torch.export.ExportedProgram`.

    Returns:
        The module tree (classes that cannot be imported become plain ``nn.Module``); the same
        object for every call with the same program.

    Example:
        >>> ep = torch.export.export(torchvision.models.resnet18().eval(), (torch.randn(1, 3, 64, 64),))
        >>> type(program_module(ep).conv1).__name__
        'Conv2d'
    """
    cached = _PROGRAM_MODULES.get(ep)
    if cached is not None:
        return cached
    convs, layers = _parameter_uses(ep)
    classes = {**layers, **_module_classes(ep)}  # the exporter's record first
    made: dict[str, nn.Module] = {}

    def module_at(path: str) -> nn.Module:
        if path in made:
            return made[path]
        cls = classes.get(path, nn.Module)
        m = cls.__new__(cls)
        nn.Module.__init__(m)
        if path:
            parent_path, _, attr = path.rpartition(".")
            module_at(parent_path).add_module(attr, m)
        made[path] = m
        return m

    root = module_at("")

    for spec in ep.graph_signature.input_specs:
        if spec.kind.name != "PARAMETER":
            continue
        path, _, attr = spec.target.rpartition(".")
        m = module_at(path)
        p = ep.state_dict[spec.target]
        m.register_parameter(attr, p if isinstance(p, nn.Parameter) else nn.Parameter(p, requires_grad=False))
        for key, v in convs.get(spec.target, {}).items():
            setattr(m, key, v)
    _PROGRAM_MODULES[ep] = root
    return root


def record_program(ep: Any, model: nn.Module | None = None) -> RawGraph:
    """Read the graph of a :class:`torch.export.ExportedProgram`.

    The program's module is re-traced with ``make_fx`` on fake tensors (composite operators such as
    ``aten.linear`` are decomposed as autograd would), with its example inputs.

    Args:
        ep: the exported program.
        model: :func:`program_module` of ``ep`` (made if not given); parameter nodes refer to its modules.

    Returns:
        The :class:`RawGraph` (``tracer == "fx"``).

    Raises:
        FxCaptureError: the program has no example inputs, or cannot be re-traced.
    """
    model = model if model is not None else program_module(ep)
    args, kwargs = ep.example_inputs or ((), {})
    if kwargs:
        raise FxCaptureError("the program takes keyword inputs; only positional example inputs are supported")
    module = ep.module()
    tensors = model_tensors(module)
    gm = capture(module, list(args), in_eval_mode=False)  # a program has fixed example inputs
    by_name = dict(model.named_parameters(remove_duplicate=False))
    names = {id(t): n for n, t in module.named_parameters(remove_duplicate=False)}
    owners = owner_map(model)
    leaves = {}
    for i, t in enumerate(tensors):
        name = names.get(id(t))
        if name is not None and name in by_name and id(by_name[name]) in owners:
            leaves[i] = (*owners[id(by_name[name])], tuple(t.shape))
    return read_fx(gm, leaves)
