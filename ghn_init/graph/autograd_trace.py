"""Record a model's operation graph from autograd, without computing anything.

The published GHNs were trained on graphs read off PyTorch's autograd graph (every ``grad_fn`` of
a forward pass), so that is the graph we read too. We run the forward pass with the parameters and
buffers swapped for *meta* tensors (in each module's parameter and buffer dicts): autograd
records every operation, but no arithmetic is done and no memory is allocated for activations.
The model's own tensors are never touched.

If a model cannot run on meta tensors (it calls ``.item()`` or mixes in real tensors), the same
recording is done with a real forward pass of a small batch on the model's device, on *copies* of
its parameters and buffers, so in-place updates made by the forward (a call counter, an EMA,
spectral norm's power iteration) land on the copies.

Either way the model is left exactly as it was: every module attribute the forward pass sets,
replaces or adds (cached anchors, a recomputed ``weight``, a memo dict) is put back, every tensor we
substituted is restored under every name it has (a module used twice is one module), and a
post-condition check raises instead of leaving a substituted tensor behind.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import operator
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, Sequence, TypeVar

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

from ..errors import TraceError
from . import walk
from .meta_ops import STAND_IN_FUNCTIONS, empty_like, meta_stand_in, new_empty

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
    ran: set[int] = field(default_factory=set)  # id() of every module the forward pass called


class _FusedAttention(torch.autograd.Function):
    """Stand-in for ``scaled_dot_product_attention`` while recording on meta tensors.

    On CPU and GPU, PyTorch runs a fused attention kernel that appears in autograd as one node with
    no softmax inside, but on meta tensors it falls back to the unfused math path (softmax, bmm).
    Recording this single node keeps the graph the same on every device.
    """

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *rest: Any) -> torch.Tensor:
        return new_empty(q, (*q.shape[:-1], v.shape[-1]))

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
        return empty_like(x)

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
    if len(args) >= len(names) and not kwargs.keys() & names:  # all by position, as torch.nn's norm layers call
        x, w, b = (args[i] for i in pos)
    else:
        bound = dict(zip(names, args, strict=False))
        bound.update({k: v for k, v in kwargs.items() if k in names})
        x, w, b = (bound.get(names[i]) for i in pos)
    if not isinstance(x, torch.Tensor) or not all(t is None or isinstance(t, torch.Tensor) for t in (w, b)):
        return None
    return x, w, b


def _attention_args(args: tuple, kwargs: dict) -> tuple[Any, Any, Any, list[torch.Tensor]]:
    """(query, key, value, [its other tensor arguments, e.g. attn_mask]) of a scaled_dot_product_attention call,
    whether they are passed by position or by keyword."""
    bound = {**dict(zip(("query", "key", "value"), args[:3], strict=False)), **kwargs}
    q, k, v = bound.pop("query"), bound.pop("key"), bound.pop("value")
    return q, k, v, [a for a in (*args[3:], *bound.values()) if isinstance(a, torch.Tensor)]


_NORMS = (torch.nn.functional.batch_norm, torch.nn.functional.layer_norm, torch.nn.functional.group_norm)
# everything the mode below stands in for; any other function (views, ``dim``, ...) runs at once
_HANDLED = frozenset((torch.nn.functional.scaled_dot_product_attention, *_NORMS, *STAND_IN_FUNCTIONS))


class _FusedAttentionOnMeta(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        if func not in _HANDLED:
            return func(*args, **kwargs)
        if func is torch.nn.functional.scaled_dot_product_attention:
            q, k, v, extra = _attention_args(args, kwargs)
            return _FusedAttention.apply(q, k, v, *extra)
        stand_in = meta_stand_in(func, args, kwargs)
        if stand_in is not None:
            return stand_in
        norm = _norm_args(func, args, kwargs)
        if norm is not None:
            x, w, b = norm
            if x.is_meta and torch.is_grad_enabled():
                return _Normalization.apply(x, *(t for t in (w, b) if t is not None))
        return func(*args, **kwargs)


def _own_parameters(module: nn.Module, remove_duplicate: bool) -> Iterator[tuple[str, torch.Tensor]]:
    """``module.named_parameters(recurse=False, remove_duplicate=...)``, read straight off ``_parameters``
    unless the module's class overrides ``named_parameters`` (the generic method walks ``named_modules``
    for every module, a large part of recording a CNN with hundreds of modules)."""
    if type(module).named_parameters is not nn.Module.named_parameters:
        yield from module.named_parameters(recurse=False, remove_duplicate=remove_duplicate)
        return
    seen: set[int] = set()
    for name, p in module._parameters.items():
        if p is None or id(p) in seen:
            continue
        if remove_duplicate:
            seen.add(id(p))
        yield name, p


def parameter_owners(
    model: nn.Module,
    *,
    remove_duplicate: bool = False,
    named_modules: Optional[list[tuple[str, nn.Module]]] = None,
) -> dict[int, list[tuple[str, nn.Module]]]:
    """id(parameter) -> every (qualified name, owning module) it has, in ``named_modules`` order.

    Tied weights have several names. With ``remove_duplicate``, a module reachable by several paths
    is visited once and a tensor held twice by one module is listed once (``named_modules()`` and
    ``named_parameters()`` defaults). ``named_modules``: ``model.named_modules(remove_duplicate=...)``
    if the caller already has it.
    """
    owners: dict[int, list[tuple[str, nn.Module]]] = {}
    if named_modules is None:
        named_modules = walk.named_modules(model, remove_duplicate)
    for module_name, module in named_modules:
        for param_name, p in _own_parameters(module, remove_duplicate):
            owners.setdefault(id(p), []).append((f"{module_name}.{param_name}" if module_name else param_name, module))
    return owners


def owner_map(
    model: nn.Module, named_modules: Optional[list[tuple[str, nn.Module]]] = None
) -> dict[int, tuple[str, nn.Module]]:
    """id(parameter) -> (qualified name, owning module). For tied weights the last owner wins.
    ``named_modules``: ``list(model.named_modules())`` if the caller already has it."""
    owners = parameter_owners(model, remove_duplicate=True, named_modules=named_modules)
    return {pid: names[-1] for pid, names in owners.items()}


def any_tensor(model: nn.Module, test: Callable[[torch.Tensor], bool]) -> bool:
    """Whether ``test`` holds for a parameter or buffer of ``model``: one walk over its modules' own dicts, for
    checks that name the tensors (with ``named_parameters``/``named_buffers``) only when one is found.

    Example:
        >>> any_tensor(nn.Linear(2, 2), lambda t: t.is_meta)
        False
    """
    for m in walk.modules(model):
        for t in m._parameters.values():
            if t is not None and test(t):
                return True
        for t in m._buffers.values():
            if t is not None and test(t):
                return True
    return False


def _set_training(modules: list[nn.Module], modes: list[bool]) -> None:
    for m, training in zip(modules, modes, strict=True):
        if type(m).__setattr__ is nn.Module.__setattr__:
            m.__dict__["training"] = training  # what Module.__setattr__ does for a bool, without its checks
        else:
            m.training = training


@contextlib.contextmanager
def eval_mode(model: nn.Module, modules: Optional[list[nn.Module]] = None) -> Iterator[None]:
    """Record in eval mode (no dropout, no auxiliary heads), then restore each module's mode.

    ``modules``: ``list(model.modules())`` if the caller already has it. Where no module overrides
    ``train``, the flags are set directly (what ``model.eval()`` does, without its recursion).
    """
    modules = walk.modules(model) if modules is None else modules
    modes = [m.training for m in modules]
    if all(type(m).train is nn.Module.train for m in modules):
        _set_training(modules, [False] * len(modules))
    else:
        model.eval()
    try:
        yield
    finally:
        _set_training(modules, modes)


_META = torch.device("meta")
_CONTIGUOUS = torch.contiguous_format


def _substitutes(
    model: nn.Module, meta: bool, modules: Optional[list[nn.Module]] = None
) -> tuple[dict[int, torch.Tensor], dict[int, int]]:
    """Tensors to run the model with, by id of the original, and a map id(substitute) -> id(original parameter).

    On meta, fresh meta tensors; for a real forward, detached copies (float16/bfloat16 in float32), so
    nothing the forward pass writes in place reaches the model. A tensor held under several names
    (tied weights, a module used twice) gets one substitute. ``modules``: ``list(model.modules())`` if the
    caller already has it.
    """
    subs: dict[int, torch.Tensor] = {}
    back: dict[int, int] = {}
    for module in walk.modules(model) if modules is None else modules:
        for store in (module._parameters, module._buffers):
            for t in store.values():
                if t is None or id(t) in subs:
                    continue
                is_param = type(t) is nn.Parameter or isinstance(t, nn.Parameter)  # the metaclass check is slow
                if meta:
                    floating = t.is_floating_point()
                    dtype = torch.float32 if floating else t.dtype
                    grad = is_param and (floating or t.is_complex())  # an integer parameter cannot require grad
                    if (type(t) is nn.Parameter or type(t) is torch.Tensor) and t.layout == torch.strided:
                        # half the cost of torch.empty + requires_grad_ (hundreds of tensors); same result
                        sub = torch.empty_like(
                            t, dtype=dtype, device=_META, memory_format=_CONTIGUOUS, requires_grad=grad
                        )
                    else:  # subclasses, sparse tensors: nothing of theirs is dispatched
                        sub = torch.empty(t.shape, dtype=dtype, device=_META, requires_grad=grad)
                else:
                    sub = t.detach()
                    sub = sub.float() if sub.dtype in (torch.float16, torch.bfloat16) else sub.clone()
                    if is_param and (sub.is_floating_point() or sub.is_complex()):
                        sub.requires_grad_(True)
                if is_param:
                    back[id(sub)] = id(t)
                subs[id(t)] = sub
    return subs, back


_CONTAINERS = (dict, list, set)
_EXACT_CONTAINERS = frozenset({dict, collections.OrderedDict, list, set})
_PLAIN = frozenset({bool, int, float, str, type(None), tuple})  # attribute types that hold no state to restore


class _ModuleState:
    """A snapshot of every module's attributes, to put the model back exactly as it was.

    Saved per module (each module once, however often it is used): the attribute dict itself, a
    shallow copy of every non-empty dict/list/set attribute (``_parameters``, ``_buffers``, caches), the
    empty ones (most hook dicts: nothing to copy, only to empty again), and a copy of every plain tensor
    attribute that is not a parameter or buffer (in-place writes to it are undone from the copy).

    Restoring compares identities in bulk (``map(operator.is_, ...)``) and goes attribute by attribute only
    where something changed: a recording swaps the parameters and buffers of every module and leaves the
    rest of its ~20 attributes alone.
    """

    def __init__(self, model: nn.Module, modules: Optional[list[nn.Module]] = None) -> None:
        self.modules = walk.modules(model) if modules is None else modules
        self.attrs: list[dict[str, Any]] = []
        self.empty: list[Any] = []  # containers that were empty
        self.filled: list[tuple[Any, Any]] = []  # (container, its shallow copy)
        self.stores: list[tuple[Optional[dict], Optional[dict]]] = []  # copies of _parameters, _buffers (None: empty)
        self.tensors: list[tuple[torch.Tensor, int, torch.Tensor]] = []
        for m in self.modules:  # one pass over each module's attributes (hundreds of modules, ~20 attributes each)
            d = dict(m.__dict__)
            stores: dict[str, Any] = {}
            for k, v in d.items():
                kind = type(v)
                if kind in _PLAIN:
                    continue
                if kind in _EXACT_CONTAINERS or isinstance(v, _CONTAINERS):
                    if v:
                        copy = list(v) if isinstance(v, list) else v.copy()
                        self.filled.append((v, copy))
                        if k == "_parameters" or k == "_buffers":
                            stores[k] = copy
                    else:
                        self.empty.append(v)
                elif isinstance(v, torch.Tensor) and not v.is_meta:
                    try:
                        self.tensors.append((v, v._version, v.detach().clone()))
                    except RuntimeError:  # inference tensors have no version counter and cannot be written
                        pass
            self.attrs.append(d)
            self.stores.append((stores.get("_parameters"), stores.get("_buffers")))

    def restore(self) -> None:
        """Put back every attribute, container content and tensor value saved at construction."""
        for m, saved in zip(self.modules, self.attrs, strict=True):
            current = m.__dict__
            if current.keys() != saved.keys():  # attributes added by the forward pass
                for k in [k for k in current if k not in saved]:
                    del current[k]
            if len(current) != len(saved) or not all(map(operator.is_, current.values(), saved.values())):
                for k, v in saved.items():
                    if current.get(k) is not v:
                        current[k] = v
        if any(self.empty):
            for v in self.empty:
                if v:
                    v.clear()
        for v, copy in self.filled:
            if isinstance(v, dict):
                if (
                    len(v) == len(copy)
                    and all(map(operator.is_, v.values(), copy.values()))
                    and v.keys() == copy.keys()
                ):
                    continue
                if v.keys() != copy.keys() or any(v[i] is not copy[i] for i in copy):
                    v.clear()
                    v.update(copy)
            elif isinstance(v, list):
                if len(v) != len(copy) or not all(map(operator.is_, v, copy)):
                    v[:] = copy
            elif v != copy:  # a set
                v.clear()
                v.update(copy)
        with torch.no_grad():
            for t, version, copy in self.tensors:
                if t._version != version:
                    t.copy_(copy)

    def check(self) -> None:
        """Post-condition: every parameter and buffer is the very tensor it was before recording.

        Raises:
            TraceError: a substituted tensor is still in place.
        """
        for m, saved, copies in zip(self.modules, self.attrs, self.stores, strict=True):
            for store, copy in zip(("_parameters", "_buffers"), copies, strict=True):
                after = m.__dict__[store]
                if copy is None:
                    changed = bool(after)
                elif len(after) == len(copy) and all(map(operator.is_, after.values(), copy.values())):
                    changed = after.keys() != copy.keys()
                else:
                    changed = after.keys() != copy.keys() or any(after[k] is not copy[k] for k in copy)
                if after is not saved[store] or changed:
                    raise TraceError(
                        f"recording left a substituted tensor in {type(m).__name__}.{store}; "
                        "the model was restored, please report this model to ghn-init"
                    )


_F = TypeVar("_F", bound=Callable[..., Any])
_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


@contextlib.contextmanager
def exclusive(model: nn.Module) -> Iterator[None]:
    """Hold ``model``'s recording lock: one thread at a time reads and swaps its tensors.

    Recording swaps a model's parameters and buffers for stand-ins in its modules' dicts and puts them
    back afterwards (:func:`substituted`). Two threads recording one model at once would interleave:
    the second saves the first's stand-ins as "the model" and puts those back. Worked example, before this
    lock: resnet18 traced by two threads, four times each, ended with all 122 of its tensors on the meta
    device and in eval mode, and 5 of the 8 traces failed. Each model has its own re-entrant lock (the
    recorders nest), so different models are still recorded in parallel. It cannot stop other code, such
    as a training loop in another thread, from using the model while it is recorded.
    """
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
    with lock:
        yield


@contextlib.contextmanager
def exclusive_all(models: Sequence[nn.Module]) -> Iterator[None]:
    """Hold the recording lock of every model in ``models`` (:func:`exclusive`), taken in one order (by
    ``id``) whatever the order given, so two threads holding overlapping sets cannot deadlock."""
    with contextlib.ExitStack() as held:
        for model in sorted({id(m): m for m in models}.values(), key=id):
            held.enter_context(exclusive(model))
        yield


def locked(fn: _F) -> _F:
    """Decorate a function whose first argument is a model to run under :func:`exclusive` (the tensors it
    reads before swapping them must be the model's own, not another thread's stand-ins)."""

    @functools.wraps(fn)
    def wrapper(model: nn.Module, *args: Any, **kwargs: Any) -> Any:
        with exclusive(model):
            return fn(model, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def preserved(model: nn.Module, modules: Optional[list[nn.Module]] = None) -> Iterator[list[nn.Module]]:
    """Save every module's attributes, yield the modules, then put everything back and check it.

    Whatever the body changes on any module (tensors substituted, attributes set or added, caches,
    in-place writes to plain tensor attributes) is undone, whether the body succeeds or raises, and the
    result is checked (:meth:`_ModuleState.check`). ``modules``: ``list(model.modules())`` if the caller
    already has it.
    """
    with exclusive(model):
        state = _ModuleState(model, modules)
        try:
            yield state.modules
        finally:
            state.restore()
            state.check()


@contextlib.contextmanager
def substituted(
    model: nn.Module, subs: dict[int, torch.Tensor], modules: Optional[list[nn.Module]] = None
) -> Iterator[None]:
    """Run the body with every parameter and buffer replaced by its substitute, then put the model back
    (see :func:`preserved`)."""
    with preserved(model, modules) as modules:
        swap_in(modules, subs)
        yield


def swap_in(modules: list[nn.Module], subs: dict[int, torch.Tensor]) -> None:
    """Replace every parameter and buffer of ``modules`` by ``subs[id(tensor)]`` in the modules' own dicts
    (no hooks, no checks: the caller holds :func:`preserved`, which puts them back)."""
    for module in modules:
        for store in (module._parameters, module._buffers):
            for name, t in store.items():
                if t is not None:
                    store[name] = subs[id(t)]


def output_tensors(out: Any) -> list[torch.Tensor]:
    """Every tensor in a model's output: nested tuples, lists and dicts (detection outputs), ``.logits``."""
    found: list[torch.Tensor] = []
    stack = [out]
    while stack:
        o = stack.pop(0)
        if isinstance(o, torch.Tensor):
            found.append(o)
        elif isinstance(o, dict):
            stack[:0] = list(o.values())
        elif isinstance(o, (list, tuple)):
            stack[:0] = list(o)
        elif hasattr(o, "logits") and isinstance(o.logits, torch.Tensor):
            found.append(o.logits)
    return found


@locked
def record(
    model: nn.Module,
    input_size: Optional[tuple[int, ...]] = None,
    *,
    meta: bool = True,
    args: Optional[tuple] = None,
    kwargs: Optional[dict[str, Any]] = None,
) -> RawGraph:
    """Run ``model`` once and read the autograd graph into a :class:`RawGraph`; the model is left as it was.

    Args:
        model: the model to record.
        input_size: ``(C, H, W)`` of a zero batch of 2 to call the model with (ignored if ``args`` is given).
        meta: run on meta tensors (nothing computed) or, if False, a real forward pass on copies.
        args: positional inputs to call the model with instead (see :mod:`ghn_init.graph.inputs`); tensors
            are moved to meta (or cloned) here.
        kwargs: keyword inputs to call the model with.

    Returns:
        The raw autograd graph, ``tracer`` set to ``"autograd-meta"`` or ``"autograd-forward"``.

    Raises:
        Any exception of the model's forward pass (the model is restored first).
    """
    from .inputs import prepare

    first = next(model.parameters(), None)
    device = torch.device("meta") if meta else (first.device if first is not None else torch.device("cpu"))
    named_modules = walk.named_modules(model)  # walked once here: models have hundreds of modules
    modules = walk.modules(model)
    owners = owner_map(model, named_modules)
    with torch.inference_mode(False):  # record even inside a user's torch.inference_mode()
        if args is None:
            args = (torch.zeros(2, *input_size, device="meta"),)  # made real by prepare() only for a real forward
        call_args, call_kwargs = prepare(args, kwargs or {}, device)
        subs, back = _substitutes(model, meta, modules)
        ran: set[int] = set()
        with substituted(model, subs, modules), eval_mode(model, modules), torch.enable_grad():
            _watch_calls(model, ran, modules)  # the wrappers go with the rest of the recording state on exit
            attention = _FusedAttentionOnMeta() if meta else contextlib.nullcontext()
            with attention:
                out = model(*call_args, **call_kwargs)
        roots = [o.grad_fn for o in output_tensors(out) if o.grad_fn is not None]
        leaf_names = {sub_id: owners[orig_id] for sub_id, orig_id in back.items() if orig_id in owners}
        graph = read_autograd(roots, leaf_names)
    graph.tracer = "autograd-meta" if meta else "autograd-forward"
    graph.ran = ran
    return graph


def _watch_calls(model: nn.Module, ran: set[int], modules: Optional[list[nn.Module]] = None) -> None:
    """Add ``id(module)`` to ``ran`` whenever a module of ``model`` runs its ``forward``.

    Each module gets a ``forward`` of its own in its instance dict that notes the call and calls the class's
    (its ``__wrapped__`` is that method, so ``inspect.signature`` sees the real parameters). The caller must
    hold :func:`preserved`, which removes them again with every other attribute the recording added.

    Why not forward pre-hooks (as before): any hook sends every module call down PyTorch's slow hook path
    (``Module._call_impl``), and registering hundreds of them, then putting the hook dicts back, added to it;
    on densenet121 (434 modules) hooks cost about 2 ms of a 22 ms recording, these wrappers about 0.3 ms.
    ``modules``: ``list(model.modules())`` if the caller already has it.
    """

    def watch(m: nn.Module) -> Callable[..., Any]:
        forward, key = m.forward, id(m)

        def watched(*args: Any, **kwargs: Any) -> Any:
            ran.add(key)
            return forward(*args, **kwargs)

        watched.__wrapped__ = forward  # type: ignore[attr-defined]
        return watched

    for m in walk.modules(model) if modules is None else modules:
        try:
            m.__dict__["forward"] = watch(m)
        except (RuntimeError, TypeError, AttributeError):  # a module without an attribute dict of its own
            pass


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
