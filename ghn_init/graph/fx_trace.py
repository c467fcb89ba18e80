"""Record a model's operation graph with torch.fx at the ATen level.

The model is captured with :func:`torch.fx.experimental.proxy_tensor.make_fx` on *fake* tensors
(shapes, dtypes and devices, no storage): the forward pass runs once through PyTorch's dispatcher
and every ATen operation it reaches becomes a node of an ``fx.Graph``. The graph is then read the
way the published builder reads autograd: each ATen call whose output would require a gradient
becomes the autograd node it would create (named like ``AddBackward0``, with its inputs in the
order autograd lists them), parameters become ``AccumulateGrad`` leaves, and the same depth-first
reader (:func:`~ghn_init.graph.autograd_trace.read_autograd`) turns that into a :class:`RawGraph`.
:func:`~ghn_init.graph.builder.build_graph` then applies the published reduction rules unchanged.

How an ATen call maps to an autograd node (name, which inputs are edges and in which order, which
outputs are differentiable) is not guessed from tables: the first time a call signature is seen,
the one operation is run on empty meta tensors with autograd on and its ``grad_fn`` is read (a few
microseconds, cached per operator and signature). Fused attention and batch/layer/group norm are
replaced by the same single-node stand-ins as in the autograd recorder (custom ops
``ghn_init::fused_attention`` and ``ghn_init::normalization``, registered on first use; the CPU's
fused attention operator is read as the same stand-in), so both paths reduce to the same graph.

Why ``make_fx`` on fake tensors rather than ``torch.export`` (median of 3, 1 thread, resnet18 at
224x224, measured with another job sharing the CPU, so compare ratios): ``make_fx`` on fake tensors
0.24 s (0.26 s with reading the graph), ``make_fx`` on meta tensors 0.48 s, ``torch.export.export``
0.83 s, against 0.014 s for the autograd-on-meta recorder. ``torch.export`` also keeps composite
operators (``aten.linear``, ``aten.conv2d``) that autograd never sees, so its graph would have to be
re-traced anyway. Fake tensors keep the model's device (a CPU tensor created inside ``forward``
mixes with them, unlike meta tensors) and allocate nothing. An :class:`torch.export.ExportedProgram`
is read by re-tracing its module the same way (:mod:`ghn_init.graph.program`). Per-model numbers:
``docs/tracers.md`` (``python benchmarks/tracers.py``).

In-place operations are read as autograd records them: an in-place operation on a view becomes a
``CopySlices`` node on the view's base, and views of a base modified in place since they were made
become ``AsStridedBackward0`` nodes of the base's new node. Calls made under ``torch.no_grad()``
inside ``forward`` are marked while capturing and give no node, as in autograd.

Limits (the ``auto`` tracer falls back to a real forward pass when capture fails): data-dependent
control flow and ``.item()`` cannot be captured on fake tensors. The autograd graph of a model
that the recorder runs on meta tensors can differ below the reduction rules where an operator
picks its implementation by device (``nn.MultiheadAttention``'s attention is decomposed on meta
tensors and one fused CPU operator on fake CPU tensors); the reduced GHN graphs are the same on
every measured model.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import fx, nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from .autograd_trace import (
    POOL_OPS,
    RawGraph,
    _attention_args,
    _FusedAttention,
    _norm_args,
    _Normalization,
    _watch_calls,
    eval_mode,
    locked,
    output_tensors,
    owner_map,
    preserved,
    read_autograd,
    swap_in,
)

__all__ = ["FxCaptureError", "capture", "read_fx", "record_fx"]

ATTENTION_NODE = _FusedAttention._backward_cls.__name__  # the autograd recorder's stand-in node names
NORM_NODE = _Normalization._backward_cls.__name__


class FxCaptureError(RuntimeError):
    """The model could not be captured, or its fx graph cannot be read as autograd would record it."""


# --------------------------------------------------------------------------------------------------
# Stand-in operators for fused attention and norms (registered lazily: no side effect at import).

_LIBRARY: torch.library.Library | None = None


def _standin_ops() -> Any:
    global _LIBRARY
    if _LIBRARY is None:
        lib = torch.library.Library("ghn_init", "FRAGMENT")
        lib.define("fused_attention(Tensor q, Tensor k, Tensor v, Tensor[] extra) -> Tensor")
        lib.define("normalization(Tensor x, Tensor[] params) -> Tensor")

        def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra: list) -> torch.Tensor:
            return q.new_empty((*q.shape[:-1], v.shape[-1]))

        def normalization(x: torch.Tensor, params: list) -> torch.Tensor:
            return torch.empty_like(x)

        for key in ("CompositeExplicitAutograd", "Meta"):
            lib.impl("fused_attention", attention, key)
            lib.impl("normalization", normalization, key)
        _LIBRARY = lib
    return torch.ops.ghn_init


class _StandIns(TorchFunctionMode):
    """While capturing: one stand-in call for each fused attention and each batch/layer/group norm."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        if func is torch.nn.functional.scaled_dot_product_attention:
            return _standin_ops().fused_attention(*_attention_args(args, kwargs))
        norm = _norm_args(func, args, kwargs)
        if norm is not None and torch.is_grad_enabled():
            x, w, b = norm
            return _standin_ops().normalization(x, [t for t in (w, b) if t is not None])
        return func(*args, **kwargs)


def _aten_standins() -> dict[Any, tuple[str, Callable[[list], list]]]:
    """ATen operators read as the stand-in nodes (for graphs captured without :class:`_StandIns`,
    such as an ExportedProgram's): operator -> (node name, chooser of its (input, weight, bias))."""
    aten = torch.ops.aten
    table: dict[Any, tuple[str, Callable[[list], list]]] = {}

    def by_name(*names: str) -> Callable[[list], list]:
        return lambda named: [named.get(n) for n in names]

    for name, overloads, pick in (
        (
            NORM_NODE,
            (
                "native_batch_norm",
                "_native_batch_norm_legit_no_training",
                "_native_batch_norm_legit",
                "batch_norm",
                "native_group_norm",
            ),
            by_name("input", "weight", "bias"),
        ),
        (NORM_NODE, ("native_layer_norm", "layer_norm", "group_norm"), by_name("input", "weight", "bias")),
        (
            ATTENTION_NODE,
            (
                "scaled_dot_product_attention",
                "_scaled_dot_product_flash_attention_for_cpu",
                "_scaled_dot_product_flash_attention",
                "_scaled_dot_product_efficient_attention",
                "_scaled_dot_product_cudnn_attention",
                "_scaled_dot_product_attention_math",
            ),
            None,
        ),
    ):
        for op_name in overloads:
            packet = getattr(aten, op_name, None)
            if packet is None:
                continue
            for overload in packet.overloads():
                table[getattr(packet, overload)] = (name, pick)  # type: ignore[assignment]
    return table


# --------------------------------------------------------------------------------------------------
# Autograd-like nodes built from the fx graph, read by read_autograd.


class _Function:
    """An autograd node as read_autograd sees it: a class name and ``next_functions``."""

    __slots__ = ("_saved_kernel_size", "next_functions")

    def __init__(self, next_functions: tuple, kernel: tuple[int, ...] | None = None):
        self.next_functions = next_functions
        self._saved_kernel_size = kernel


class AccumulateGrad:
    """A parameter leaf, as autograd's ``AccumulateGrad`` node (read by its ``variable``)."""

    __slots__ = ("next_functions", "variable")

    def __init__(self, variable: Any):
        self.variable = variable
        self.next_functions = ()


_CLASSES: dict[str, type] = {}


def _node(name: str, next_functions: tuple, kernel: tuple[int, ...] | None = None) -> _Function:
    cls = _CLASSES.get(name)
    if cls is None:
        cls = _CLASSES[name] = type(name, (_Function,), {"__slots__": ()})
    return cls(next_functions, kernel)


class _Shape:
    """The ``variable`` of a parameter leaf: only its shape is read."""

    __slots__ = ("shape",)

    def __init__(self, shape: Sequence[int]):
        self.shape = torch.Size(shape)


def _op_prefix(op: Any) -> str:
    """torchgen's autograd class prefix of an ATen operator: ``_adaptive_avg_pool2d`` -> ``AdaptiveAvgPool2D``."""
    base = op._schema.name.split("::")[-1].rstrip("_")
    return "".join(part.title() for part in base.split("_"))


class _Probe:
    """How autograd records one operator call: node name, inputs in next_functions order, outputs."""

    __slots__ = ("differentiable", "kernel", "name", "slots")

    def __init__(self, name: str, slots: list, differentiable: list, kernel: tuple[int, ...] | None):
        self.name, self.slots, self.differentiable, self.kernel = name, slots, differentiable, kernel


_PROBES: dict[Any, _Probe] = {}


def _tensor_args(op: Any, node: fx.Node) -> tuple[list[fx.Node], dict[str, list[int]]]:
    """The node's tensor inputs in schema order (lists flattened) and their positions by argument name."""
    flat: list[fx.Node] = []
    named: dict[str, list[int]] = {}
    for i, arg in enumerate(op._schema.arguments):
        value = node.args[i] if i < len(node.args) else node.kwargs.get(arg.name)
        items = value if isinstance(value, (list, tuple)) else [value]
        positions = []
        for item in items:
            if isinstance(item, fx.Node) and isinstance(item.meta.get("val"), torch.Tensor):
                positions.append(len(flat))
                flat.append(item)
        if positions:
            named[arg.name] = positions
    return flat, named


def _meta_like(value: torch.Tensor, requires_grad: bool) -> torch.Tensor:
    t = torch.empty_strided(tuple(value.shape), tuple(value.stride()), dtype=value.dtype, device="meta")
    return t.requires_grad_(requires_grad)


def _probe(op: Any, node: fx.Node, flat: list[fx.Node], named: dict, grads: list[bool]) -> _Probe:
    """Run ``op`` once on empty meta tensors shaped like the node's inputs and read its grad_fn.

    ``flat`` and ``named`` are the node's tensor arguments as :func:`_tensor_args` gives them.
    """
    pooling = (_op_prefix(op) + "Backward").startswith(POOL_OPS)
    val = node.meta.get("val")
    values = val if isinstance(val, (list, tuple)) else [val]
    floating_out = tuple(isinstance(v, torch.Tensor) and v.is_floating_point() for v in values)
    key = (op, tuple(grads), tuple(len(v) for v in named.values()), floating_out)
    if not pooling and key in _PROBES:
        return _PROBES[key]
    mutated = {i for i, a in enumerate(op._schema.arguments) if a.alias_info is not None and a.alias_info.is_write}
    by_id: dict[int, int] = {}
    probes: dict[fx.Node, torch.Tensor] = {}
    position = {n: i for i, n in enumerate(flat)}

    def substitute(value: Any, arg_index: int) -> Any:
        if isinstance(value, fx.Node):
            if value not in probes:
                j = position[value]
                leaf = _meta_like(value.meta["val"], grads[j])
                t = leaf.clone() if grads[j] and arg_index in mutated else leaf
                by_id[id(t.grad_fn) if t.grad_fn is not None else id(leaf)] = j
                probes[value] = t
            return probes[value]
        if isinstance(value, (list, tuple)):
            return type(value)(substitute(v, arg_index) for v in value)
        if isinstance(value, torch.device):
            return torch.device("meta")
        return value

    names = [a.name for a in op._schema.arguments]
    args = [substitute(a, i) for i, a in enumerate(node.args)]
    kwargs = {k: substitute(v, names.index(k) if k in names else -1) for k, v in node.kwargs.items()}
    try:
        with torch.enable_grad():
            out = op(*args, **kwargs)
    except Exception:  # noqa: BLE001 - no meta kernel: torchgen's naming and schema order instead
        out = None
    if out is None:
        floating = list(floating_out)
        result = _Probe(
            _op_prefix(op) + "Backward0", [j if grads[j] else None for j in range(len(flat))], floating, None
        )
    else:
        outs = list(out) if isinstance(out, (list, tuple)) else [out]
        differentiable = [isinstance(o, torch.Tensor) and o.requires_grad for o in outs]
        fn = next((o.grad_fn for o in outs if isinstance(o, torch.Tensor) and o.grad_fn is not None), None)
        if fn is None:
            result = _Probe("", [], [False] * len(outs), None)
        else:
            slots: list[int | None] = []
            for child, _ in fn.next_functions:
                if child is None:
                    slots.append(None)
                    continue
                k = id(child.variable) if hasattr(child, "variable") else id(child)
                if k not in by_id:
                    raise FxCaptureError(f"cannot tell which inputs of {op} autograd links to")
                slots.append(by_id[k])
            kernel = getattr(fn, "_saved_kernel_size", None) if pooling else None
            kernel = tuple(int(k) for k in kernel) if kernel else None
            result = _Probe(type(fn).__name__, slots, differentiable, kernel)
    if not pooling:
        _PROBES[key] = result
    return result


def _is_view(op: Any) -> bool:
    returns = op._schema.returns
    return bool(returns) and returns[0].alias_info is not None and not returns[0].alias_info.is_write


class _Family:
    """A tensor and its views, as autograd tracks them: the base's current node and a version counter."""

    __slots__ = ("fn", "version")

    def __init__(self, fn: Any):
        self.fn, self.version = fn, 0


class _Reader:
    """Walks an fx graph in order, giving each tensor-valued node the autograd node of its value."""

    def __init__(self, leaves: dict[int, tuple[str, nn.Module, tuple[int, ...]]]):
        self.leaves = leaves
        self.leaf_names: dict[int, tuple[str, nn.Module]] = {}
        self.value: dict[fx.Node, Any] = {}  # autograd node (None: no gradient), a list for several outputs
        self.family: dict[fx.Node, _Family] = {}
        self.view_version: dict[fx.Node, int] = {}  # views only: the family version they were made at
        self.regenerated: dict[tuple[fx.Node, int], Any] = {}
        # operator -> (stand-in node name, chooser of its inputs; None: all of them, as our own stand-in ops)
        self.standins: dict[Any, tuple[str, Callable[[list], list] | None]] = dict(_aten_standins())
        if _LIBRARY is not None:
            ops = _standin_ops()
            self.standins[ops.fused_attention.default] = (ATTENTION_NODE, None)
            self.standins[ops.normalization.default] = (NORM_NODE, None)

    def grad(self, node: Any) -> Any:
        """The autograd node of a tensor now. A view whose base was modified in place since it was
        made gets a fresh ``AsStridedBackward0`` of the base's node, as autograd regenerates it."""
        fn = self.value.get(node)
        fam = self.family.get(node)
        if fam is None or isinstance(fn, list):
            return fn
        made = self.view_version.get(node)
        if made is None:
            return fam.fn  # a base: its node after any in-place change through its views
        if fam.version == made:
            return fn
        key = (node, fam.version)
        if key not in self.regenerated:
            self.regenerated[key] = _node("AsStridedBackward0", ((fam.fn, 0),)) if fam.fn is not None else None
        return self.regenerated[key]

    def set_tensor(self, node: fx.Node, fn: Any, view_of: fx.Node | None = None) -> None:
        self.value[node] = fn
        if view_of is not None and view_of in self.family:
            self.family[node] = fam = self.family[view_of]
            self.view_version[node] = fam.version
        else:
            self.family[node] = _Family(fn)

    def placeholder(self, node: fx.Node, position: int) -> None:
        leaf = self.leaves.get(position)
        if leaf is None:
            self.set_tensor(node, None)
            return
        name, module, shape = leaf
        variable = _Shape(shape)
        self.leaf_names[id(variable)] = (name, module)
        self.set_tensor(node, AccumulateGrad(variable))

    def call(self, node: fx.Node) -> None:
        op = node.target
        if op is operator.getitem:
            src = self.grad(node.args[0])
            if isinstance(src, list):
                src = src[node.args[1]]
            val = node.meta.get("val")
            floating = isinstance(val, torch.Tensor) and (val.is_floating_point() or val.is_complex())
            self.set_tensor(node, src if floating and not node.meta.get(NO_GRAD) else None)
            return
        if not isinstance(op, torch._ops.OpOverload):
            self.value[node] = None  # arithmetic on sizes and other Python values
            return
        flat, named = _tensor_args(op, node)
        inputs = [self.grad(n) for n in flat]
        if node.meta.get(NO_GRAD):  # under torch.no_grad(): no autograd node, an in-place call changes nothing
            inputs = [None] * len(flat)
        grads = [f is not None for f in inputs]
        args = op._schema.arguments
        in_place = bool(flat) and bool(args) and args[0].alias_info is not None and args[0].alias_info.is_write
        view_of = flat[0] if flat and _is_view(op) else None
        n_out = len(op._schema.returns)
        multi = n_out > 1 or (n_out == 1 and str(op._schema.returns[0].type).startswith("List"))
        fn: Any = None
        diff: list[bool] = [True]
        if any(grads):
            if op in self.standins:
                name, pick = self.standins[op]
                chosen = list(range(len(flat))) if pick is None else [p[0] for p in pick(named) if p]
                fn = _node(name, tuple((inputs[j], 0) for j in chosen))
                diff = [True] + [False] * (n_out - 1)
            else:
                probe = _probe(op, node, flat, named, grads)
                if probe.name:
                    nexts = tuple((inputs[j] if j is not None else None, 0) for j in probe.slots)
                    fn, diff = _node(probe.name, nexts, probe.kernel), probe.differentiable
        if multi:
            val = node.meta.get("val")
            count = len(val) if isinstance(val, (list, tuple)) else max(n_out, 1)
            self.value[node] = [
                fn if fn is not None and (diff[i] if i < len(diff) else diff[-1]) else None for i in range(count)
            ]
            return
        fn = fn if diff and diff[0] else None
        if in_place:
            target = flat[0]
            fam = self.family.get(target)
            if fam is None:
                raise FxCaptureError(f"in-place {op} on a value that is not a tensor")
            if node.meta.get(NO_GRAD):  # the tensor keeps its autograd node
                self.value[node] = self.value.get(target)
                self.family[node] = fam
                if target in self.view_version:
                    self.view_version[node] = self.view_version[target]
                return
            if target in self.view_version:  # autograd: CopySlices on the base, the view regenerated
                if fn is not None:
                    fam.fn = _node("CopySlices", ((fam.fn, 0), *fn.next_functions[1:]))
                fam.version += 1
                self.value[node] = None
                self.family[node] = fam
                self.view_version[node] = -1  # always regenerated from the base
                return
            fam.fn = fn
            fam.version += 1
            self.value[node] = fn
            self.family[node] = fam
            return
        self.set_tensor(node, fn, view_of)


def read_fx(gm: fx.GraphModule, leaves: dict[int, tuple[str, nn.Module, tuple[int, ...]]]) -> RawGraph:
    """Read an ATen-level fx graph as the autograd graph of the same forward pass.

    Args:
        gm: a graph of ATen operators (from :func:`capture`); its output is a flat list of tensors.
        leaves: placeholder position -> (qualified parameter name, owning module, shape) for every
            placeholder that is a parameter (it requires a gradient); other placeholders do not.

    Returns:
        The :class:`RawGraph` the autograd recorder gives for the same forward pass (``tracer == "fx"``).

    Raises:
        FxCaptureError: the graph holds something that is not an ATen operator.
    """
    reader = _Reader(leaves)
    roots: list[Any] = []
    position = 0
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            reader.placeholder(node, position)
            position += 1
        elif node.op == "get_attr":
            reader.set_tensor(node, None)
        elif node.op == "call_function":
            reader.call(node)
        elif node.op == "output":
            outs = node.args[0] if isinstance(node.args[0], (list, tuple)) else [node.args[0]]
            roots = [reader.grad(o) for o in outs if isinstance(o, fx.Node)]
            roots = [r for r in roots if r is not None and not isinstance(r, list)]
        else:
            raise FxCaptureError(f"unexpected fx node {node.op} {node.target}")
    graph = read_autograd(roots, reader.leaf_names)
    graph.tracer = "fx"
    return graph


# --------------------------------------------------------------------------------------------------
# Capturing an nn.Module.


def model_tensors(model: nn.Module) -> list[torch.Tensor]:
    """Every parameter, then every buffer, each once (tied or shared ones too), in module order: the order
    of the captured graph's leaf placeholders."""
    return [*model.parameters(), *model.buffers()]


@locked
def capture(
    model: nn.Module,
    args: Sequence[Any] = (),
    kwargs: dict[str, Any] | None = None,
    device: torch.device | None = None,
    *,
    in_eval_mode: bool = True,
    ran: set[int] | None = None,
) -> fx.GraphModule:
    """Capture ``model(*args, **kwargs)`` with ``make_fx`` on fake tensors; the model is left as it was.

    The model's parameters and buffers are swapped for fake tensors in its modules' dicts and put back
    afterwards, with every attribute the forward pass sets (as the autograd recorder does, see
    :func:`~ghn_init.graph.autograd_trace.substituted`; the state is saved and restored outside the
    trace, where copies and writes are real). The graph's placeholders are the model's distinct
    parameters and buffers (in ``named_parameters()`` then ``named_buffers()`` order), then the input
    tensors; its output is the flat list of output tensors the autograd recorder starts from.
    Floating-point tensors are recorded as float32, parameters as requiring a gradient, as in the
    autograd recorder.

    Args:
        model: the module; it is recorded in eval mode.
        args: example positional inputs; tensors (in nested lists, tuples and dicts) are replaced by
            fake tensors of the same shape, other values are passed as they are.
        kwargs: example keyword inputs.
        device: the device of the fake inputs (default: each input's own device).
        in_eval_mode: record in eval mode (an exported program's module has its mode baked in).
        ran: if given, ``id()`` of every module the forward pass calls is added to it.

    Returns:
        The captured ``fx.GraphModule``.

    Raises:
        FxCaptureError: the forward pass cannot be captured on fake tensors.
        TraceError: the model could not be put back as it was (never expected; see ``substituted``).
    """
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.proxy_tensor import make_fx
    from torch.utils import _pytree as pytree

    tensors = model_tensors(model)
    mode = FakeTensorMode(allow_non_fake_inputs=True)

    def fake(t: torch.Tensor, requires_grad: bool, on: torch.device | None = None) -> torch.Tensor:
        dtype = torch.float32 if t.is_floating_point() else t.dtype
        with mode:
            f = torch.empty(tuple(t.shape), dtype=dtype, device=on or t.device)
        return f.requires_grad_(requires_grad and f.is_floating_point())

    fakes = [fake(t, isinstance(t, nn.Parameter)) for t in tensors]
    leaves, spec = pytree.tree_flatten((tuple(args), dict(kwargs or {})))
    is_input = [isinstance(v, torch.Tensor) for v in leaves]
    inputs = [fake(v, False, device) for v in leaves if isinstance(v, torch.Tensor)]
    if any(isinstance(t, nn.Parameter) for t in tensors):
        _standin_ops()

    def forward(params: list, traced_inputs: list) -> list:
        values = iter(traced_inputs)
        call_args, call_kwargs = pytree.tree_unflatten(
            [next(values) if t else v for v, t in zip(leaves, is_input, strict=True)], spec
        )
        swap_in(modules, {id(t): p for t, p in zip(tensors, params, strict=True)})  # the traced stand-ins
        with _StandIns(), _NoGradOutputs():
            out = model(*call_args, **call_kwargs)
        return output_tensors(out)

    # The model's state is saved and put back outside the trace: inside it, copies and writes would be fake.
    with torch.inference_mode(False), preserved(model) as modules:
        if ran is not None:
            _watch_calls(model, ran)  # the wrappers go with the rest of the saved state on exit
        try:
            with eval_mode(model) if in_eval_mode else contextlib.nullcontext(), torch.enable_grad():
                return make_fx(forward, tracing_mode="fake", _allow_non_fake_inputs=True)(fakes, inputs)
        except Exception as e:
            message = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise FxCaptureError(f"{type(e).__name__}: {message}") from e


NO_GRAD = "ghn_init_no_grad"  # fx node meta key: the call ran with gradients disabled


class _NoGradOutputs(TorchDispatchMode):
    """Marks the fx nodes of calls made under ``torch.no_grad()`` (autograd records nothing for them;
    an fx graph does not show the grad mode) with ``node.meta[NO_GRAD]``."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        out = func(*args, **(kwargs or {}))
        if not torch.is_grad_enabled():
            from torch.fx.experimental.proxy_tensor import get_proxy_mode, get_proxy_slot

            mode = get_proxy_mode()
            for t in out if isinstance(out, (list, tuple)) else (out,):
                if mode is not None and isinstance(t, torch.Tensor):
                    slot = get_proxy_slot(t, mode.tracer, None)
                    if slot is not None:
                        slot.proxy.node.meta[NO_GRAD] = True
        return out


def _leaves(model: nn.Module, tensors: list[torch.Tensor]) -> dict[int, tuple[str, nn.Module, tuple[int, ...]]]:
    owners = owner_map(model)
    return {
        i: (*owners[id(t)], tuple(t.shape))
        for i, t in enumerate(tensors)
        if isinstance(t, nn.Parameter) and id(t) in owners
    }


@locked
def record_fx(
    model: nn.Module,
    input_size: Sequence[int] | None = None,
    *,
    args: Sequence[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
) -> RawGraph:
    """Capture ``model`` on fake inputs and read its graph as the autograd recorder would record it.

    Args:
        model: the module (left as it was).
        input_size: one sample's shape; the model is called with a fake batch of 2 (ignored if ``args``
            is given).
        args: example positional inputs instead (see :mod:`ghn_init.graph.inputs`).
        kwargs: example keyword inputs.

    Returns:
        The :class:`RawGraph` (``tracer == "fx"``, ``ran`` set).

    Raises:
        FxCaptureError: the model cannot be captured on fake tensors.

    Example:
        >>> raw = record_fx(torchvision.models.resnet18(), (3, 224, 224))
        >>> raw.tracer, raw.nodes[0].name
        ('fx', 'fc.bias')
    """
    tensors = model_tensors(model)
    device = tensors[0].device if tensors else torch.device("cpu")
    if args is None:
        args = (torch.empty((2, *input_size), device="meta"),)
    ran: set[int] = set()
    gm = capture(model, args, kwargs, device=device, ran=ran)
    graph = read_fx(gm, _leaves(model, tensors))
    graph.ran = ran
    return graph
