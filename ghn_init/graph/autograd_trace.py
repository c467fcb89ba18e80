"""Record a model's operation graph from autograd, without computing anything.

The published GHNs were trained on graphs read off PyTorch's autograd graph (every ``grad_fn`` of
a forward pass), so that is the graph we read too. We run the forward pass through
``torch.func.functional_call`` with the parameters and buffers replaced by *meta* tensors: autograd
records every operation, but no arithmetic is done and no memory is allocated for activations.
The model's own tensors are never touched.

If a model cannot run on meta tensors (it calls ``.item()`` or mixes in real tensors), the same
recording is done with a real forward pass of a small batch on the model's device, through
detached aliases of its parameters (no copy, no gradient written to the model).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

POOL_OPS = ("MaxPool2DWithIndicesBackward", "AvgPool2DBackward")


@dataclass
class RawNode:
    """One node of the raw autograd graph: a parameter tensor, or an operation without parameters."""

    name: str  # qualified parameter name, or the autograd op name such as "AddBackward0"
    module: Optional[nn.Module] = None  # the module that directly owns the parameter
    size: Optional[tuple[int, ...]] = None  # parameter shape
    kernel_size: Optional[tuple[int, ...]] = None  # for pooling ops
    is_param: bool = False


@dataclass
class RawGraph:
    nodes: list[RawNode]
    edges: set[tuple[int, int]] = field(default_factory=set)
    tracer: str = "autograd-meta"


class _FusedAttention(torch.autograd.Function):
    """Stand-in for ``scaled_dot_product_attention`` while recording on meta tensors.

    On CPU and GPU, PyTorch runs a fused attention kernel that appears in autograd as one node with
    no softmax inside, but on meta tensors it falls back to the unfused math path (softmax, bmm).
    Recording this single node keeps the graph the same on every device.
    """

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *rest: Any) -> torch.Tensor:
        return q.new_empty((*q.shape[:-1], v.shape[-1]))

    @staticmethod
    def backward(ctx: Any, *grads: Any) -> Any:  # pragma: no cover - never differentiated
        raise RuntimeError("graph recording only")


class _Normalization(torch.autograd.Function):
    """Shape-only stand-in for batch/layer/group norm while recording on meta tensors.

    On meta tensors these norms run PyTorch's Python decompositions (milliseconds per call, most of
    the recording time of a CNN). The stand-in records one autograd node whose inputs are the
    activation, then the weight and bias, in the order of the real norm's node; its name is never
    read (a norm's node is represented by its weight and bias, and a norm without affine
    parameters is not a GHN primitive), so the graph is the same.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, *params: Any) -> torch.Tensor:
        return torch.empty_like(x)

    @staticmethod
    def backward(ctx: Any, *grads: Any) -> Any:  # pragma: no cover - never differentiated
        raise RuntimeError("graph recording only")


def _norm_args(func: Any, args: tuple, kwargs: dict) -> Optional[tuple]:
    """(input, weight, bias) of a functional norm call, or None if it is not one we stand in for."""
    F = torch.nn.functional
    if func is F.batch_norm:  # (input, running_mean, running_var, weight, bias, ...)
        names = ("input", "running_mean", "running_var", "weight", "bias")
        pos = (0, 3, 4)
    elif func is F.layer_norm:  # (input, normalized_shape, weight, bias, eps)
        names, pos = ("input", "normalized_shape", "weight", "bias"), (0, 2, 3)
    elif func is F.group_norm:  # (input, num_groups, weight, bias, eps)
        names, pos = ("input", "num_groups", "weight", "bias"), (0, 2, 3)
    else:
        return None
    bound = dict(zip(names, args, strict=False))
    bound.update({k: v for k, v in kwargs.items() if k in names})
    x, w, b = (bound.get(names[i]) for i in pos)
    if not isinstance(x, torch.Tensor) or not all(t is None or isinstance(t, torch.Tensor) for t in (w, b)):
        return None
    return x, w, b


class _FusedAttentionOnMeta(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        if func is torch.nn.functional.scaled_dot_product_attention:
            q, k, v = args[:3]
            extra = [a for a in (*args[3:], *kwargs.values()) if isinstance(a, torch.Tensor)]
            return _FusedAttention.apply(q, k, v, *extra)
        norm = _norm_args(func, args, kwargs)
        if norm is not None:
            x, w, b = norm
            if x.is_meta and torch.is_grad_enabled():
                return _Normalization.apply(x, *(t for t in (w, b) if t is not None))
        return func(*args, **kwargs)


def parameter_owners(model: nn.Module, *, remove_duplicate: bool = False) -> dict[int, list[tuple[str, nn.Module]]]:
    """id(parameter) -> every (qualified name, owning module) it has, in ``named_modules`` order.

    Tied weights have several names. With ``remove_duplicate``, a module reachable by several paths
    is visited once and a tensor held twice by one module is listed once (``named_modules()`` and
    ``named_parameters()`` defaults).
    """
    owners: dict[int, list[tuple[str, nn.Module]]] = {}
    for module_name, module in model.named_modules(remove_duplicate=remove_duplicate):
        for param_name, p in module.named_parameters(recurse=False, remove_duplicate=remove_duplicate):
            owners.setdefault(id(p), []).append((f"{module_name}.{param_name}" if module_name else param_name, module))
    return owners


def owner_map(model: nn.Module) -> dict[int, tuple[str, nn.Module]]:
    """id(parameter) -> (qualified name, owning module). For tied weights the last owner wins."""
    return {pid: names[-1] for pid, names in parameter_owners(model, remove_duplicate=True).items()}


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Record in eval mode (no dropout, no auxiliary heads), then restore each module's mode."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _outputs(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [o for o in out if isinstance(o, torch.Tensor)]
    if hasattr(out, "logits") and isinstance(out.logits, torch.Tensor):
        return [out.logits]
    return []


def _substitutes(model: nn.Module, device: torch.device, meta: bool) -> tuple[dict[str, torch.Tensor], dict[int, int]]:
    """Tensors to call the model with, by name, and a map id(substitute) -> id(original parameter)."""
    tensors: dict[str, torch.Tensor] = {}
    by_id: dict[int, torch.Tensor] = {}
    back: dict[int, int] = {}
    for name, t in [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]:
        if t is None:
            continue
        sub = by_id.get(id(t))
        if sub is None:
            is_param = isinstance(t, nn.Parameter)
            if meta:
                dtype = torch.float32 if t.is_floating_point() else t.dtype
                sub = torch.empty(t.shape, dtype=dtype, device="meta")
            else:
                sub = t.detach()
                if t.is_floating_point():
                    sub = sub.float() if sub.dtype in (torch.float16, torch.bfloat16) else sub
            if is_param:
                sub.requires_grad_(True)
                back[id(sub)] = id(t)
            by_id[id(t)] = sub
        tensors[name] = sub
    return tensors, back


def record(model: nn.Module, input_size: tuple[int, ...], *, meta: bool = True) -> RawGraph:
    """Run ``model`` once on a batch of 2 and read the autograd graph into a :class:`RawGraph`."""
    params = list(model.parameters())
    device = torch.device("meta") if meta else (params[0].device if params else torch.device("cpu"))
    tensors, back = _substitutes(model, device, meta)
    owners = owner_map(model)
    x = torch.zeros(2, *input_size, device=device)
    with eval_mode(model), torch.enable_grad():
        attention = _FusedAttentionOnMeta() if meta else contextlib.nullcontext()
        with attention:
            out = torch.func.functional_call(model, tensors, (x,), strict=False, tie_weights=True)
    roots = [o.grad_fn for o in _outputs(out) if o.grad_fn is not None]
    leaf_names = {sub_id: owners[orig_id] for sub_id, orig_id in back.items() if orig_id in owners}
    graph = read_autograd(roots, leaf_names)
    graph.tracer = "autograd-meta" if meta else "autograd-forward"
    return graph


def read_autograd(roots: list[Any], leaf_names: dict[int, tuple[str, nn.Module]]) -> RawGraph:
    """Walk autograd nodes depth-first from the outputs, in the order the published builder does.

    An operation whose inputs include parameters is represented by those parameters (first one
    first); an operation without parameters is a node of its own. Edges follow the data flow, except
    that an edge into a node whose name contains "bias" points from the operation to the bias.
    """
    index: dict[int, int] = {}  # id(node key) -> position in nodes
    nodes: list[RawNode] = []
    seen: dict[Any, tuple[Optional[int], str]] = {}  # autograd fn -> (representing node, name)
    starts: dict[Any, Optional[int]] = {}  # autograd fn -> its first representing node
    order: list[Any] = []  # visited functions, for the edge pass

    def add_node(key: Any, node: RawNode) -> int:
        k = id(key)
        if k in index:
            nodes[index[k]] = node
        else:
            index[k] = len(nodes)
            nodes.append(node)
        return index[k]

    def visit(fn: Any) -> None:
        fn_name = type(fn).__name__
        link: Optional[int] = None
        start: Optional[int] = None
        if "AccumulateGrad" not in fn_name:
            leaves = []
            for child, _ in fn.next_functions:
                if child is not None and hasattr(child, "variable"):
                    owner = leaf_names.get(id(child.variable))
                    if owner is not None:
                        leaves.append((child, owner))
            if leaves:
                for child, (pname, module) in leaves:
                    link = add_node(child, RawNode(pname, module, tuple(child.variable.shape), is_param=True))
                    seen[child] = (link, pname)
                    start = link if start is None else start
            else:
                kernel = None
                if fn_name.startswith(POOL_OPS):
                    kernel = tuple(int(k) for k in getattr(fn, "_saved_kernel_size", ()) or ()) or None
                link = start = add_node(fn, RawNode(fn_name, kernel_size=kernel))
        seen[fn] = (link, fn_name)
        starts[fn] = start
        order.append(fn)

    stack = list(reversed(roots))
    while stack:
        fn = stack.pop()
        if fn in seen:
            continue
        visit(fn)
        children = [c for c, _ in getattr(fn, "next_functions", ()) if c is not None]
        stack.extend(reversed(children))

    edges: set[tuple[int, int]] = set()
    for fn in order:
        start = starts[fn]
        for child, _ in getattr(fn, "next_functions", ()):
            if child is None:
                continue
            link, name = seen[child]
            if link is None or link == start:
                continue
            edges.add((start, link) if "bias" in name else (link, start))  # type: ignore[arg-type]
    return RawGraph(nodes, edges)
