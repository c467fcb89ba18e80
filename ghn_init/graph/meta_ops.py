"""Shape-only stand-ins for operations that are slow on meta tensors, used while recording a graph.

On meta tensors PyTorch has no C++ kernel for many operations: it runs Python decompositions, a
fraction of a millisecond to a few milliseconds per call. Activations such as hardswish and
hardsigmoid made up most of the recording time of MobileNet-V3, and ``linear`` with a bias (whose
``addmm`` is decomposed into elementwise Python ops) and ``roll`` a large part of that of ConvNeXt,
Swin and ViT; shape checks of ``conv2d`` add up in CNNs with hundreds of convolutions. Nothing is
computed on meta tensors anyway, so a stand-in only has to leave the same autograd graph behind:

- the same nodes with the same names (the graph builder reads names such as ``HardswishBackward0``;
  each name is read once from PyTorch itself, by one call of the real operation on one-element
  meta tensors, so names follow the installed PyTorch),
- the same inputs in the same order, and the same in-place history for ``inplace=True`` (the input
  is marked dirty, as the real in-place kernel does),
- outputs of the same shape.

``add`` and ``mul`` (also in place, with broadcasting) are one node each; the output has the broadcast
shape, the promoted dtype and PyTorch's strides: contiguous where every operand has the standard strides
(size-1 dimensions included), else worked out as PyTorch's meta reference does
(:mod:`ghn_init.graph.elementwise_layout`; ConvNeXt's ``layer_scale * x`` on a permuted tensor).

``cat`` of tensors of one rank and dtype is one node; the output's memory format follows PyTorch's rule
(channels-last only where every input suggests it).

Adaptive average pooling is one node (a mean for a 1x1 output, a pooling kernel otherwise).

A 2-D convolution is one node (``ConvolutionBackward0``) over input, weight and bias; its output
shape is computed here instead of by PyTorch's Python meta function.

``linear`` is rebuilt from the same steps PyTorch's own ``linear`` takes (``addmm`` for 2-D input;
a flattening view, ``addmm`` and a view back for contiguous input; ``matmul`` then an in-place bias
add otherwise); only ``addmm`` and the bias add are stand-ins, the views and ``matmul`` are real.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from .elementwise_layout import contiguous_strides as _contiguous_strides
from .elementwise_layout import elementwise_strides, expanded_strides, is_non_overlapping_and_dense

# shape-preserving ops -> (position of their ``inplace`` argument or None, extra arguments for a probe call)
_UNARY: dict[Callable[..., Any], tuple[Optional[int], tuple]] = {
    F.relu: (1, ()),
    F.relu6: (1, ()),
    F.hardtanh: (3, ()),
    F.hardswish: (1, ()),
    F.hardsigmoid: (1, ()),
    F.gelu: (None, ()),
    F.leaky_relu: (2, ()),
    F.elu: (2, ()),
    F.mish: (1, ()),
    F.silu: (1, ()),
    torch.sigmoid: (None, ()),
    torch.Tensor.sigmoid: (None, ()),
    torch.tanh: (None, ()),
    torch.Tensor.tanh: (None, ()),
    torch.roll: (None, (1, 0)),
}

_CLASSES: dict[Any, type[torch.autograd.Function]] = {}


def _meta(*shape: int) -> torch.Tensor:
    return torch.empty(shape, device="meta", requires_grad=True).clone()


def _standard(t: torch.Tensor) -> bool:
    """``t`` has the strides ``torch.empty`` gives its shape: contiguous, and size-1 dimensions too (a contiguous
    tensor may have any stride on a size-1 dimension, and PyTorch's elementwise and pooling kernels then lay their
    output out by those strides)."""
    return t.layout == torch.strided and t.stride() == _contiguous_strides(t.shape)


def empty_like(t: torch.Tensor) -> torch.Tensor:
    """``torch.empty_like(t)`` without its Python reference implementation where the result is known.

    On meta tensors ``torch.empty_like`` runs PyTorch's Python reference (about 50 us: it works out a
    memory-format permutation). Where ``t`` has the strides ``torch.empty`` gives its shape, or is dense
    in any order of its dimensions with none of size 0 or 1 (a permuted contiguous tensor), the result has
    ``t``'s own strides, which ``empty_strided`` makes directly (about 2 us). Anything else (size-1
    dimensions with other strides, channels-last ties, gaps) goes to PyTorch.

    Example:
        >>> empty_like(torch.empty(2, 3, device="meta").t()).stride()
        (1, 3)
    """
    shape, strides = t.shape, t.stride()
    if t.layout == torch.strided and (
        strides == _contiguous_strides(shape)
        or (min(shape, default=0) >= 2 and is_non_overlapping_and_dense(shape, strides))
    ):
        return torch.empty_strided(shape, strides, dtype=t.dtype, device=t.device)
    return torch.empty_like(t)


def new_empty(t: torch.Tensor, shape: Any) -> torch.Tensor:
    """``t.new_empty(shape)`` (a contiguous tensor of ``t``'s dtype and device) without a Python meta function."""
    return torch.empty(shape, dtype=t.dtype, device=t.device)


def broadcast_shape(*shapes: torch.Size) -> Optional[tuple[int, ...]]:
    """The broadcast of ``shapes`` (as ``torch.broadcast_shapes``, which runs in Python on meta), or None if
    they do not broadcast (the real operation then raises its own error).

    Example:
        >>> broadcast_shape(torch.Size([2, 8, 1, 1]), torch.Size([2, 8, 4, 4]))
        (2, 8, 4, 4)
    """
    n = max(len(s) for s in shapes)
    out = [1] * n
    for s in shapes:
        for i, d in enumerate(s, n - len(s)):
            if d != 1:
                if out[i] != 1 and out[i] != d:
                    return None
                out[i] = d
    return tuple(out)


def _stand_in(key: Any, probe: Callable[[], torch.Tensor], forward: Callable[..., torch.Tensor]) -> type:
    """An autograd Function running ``forward`` whose graph node has the name ``probe()``'s node has."""
    cls = _CLASSES.get(key)
    if cls is None:
        with torch.enable_grad():
            name = type(probe().grad_fn).__name__

        def backward(ctx: Any, *grads: Any) -> Any:  # pragma: no cover - never differentiated
            raise RuntimeError("graph recording only")

        cls = type(
            name.split("Backward")[0],
            (torch.autograd.Function,),
            {"forward": staticmethod(forward), "backward": staticmethod(backward)},
        )
        cls._backward_cls.__name__ = name  # the node's type name is what the graph builder reads
        _CLASSES[key] = cls
    return cls


def _unary(func: Callable[..., Any], args: tuple, kwargs: dict) -> torch.Tensor:
    x = args[0]
    if "out" in kwargs:
        return None  # ``out=`` runs for real
    pos, probe_args = _UNARY[func]
    # other arguments (slopes, bounds, shifts, gelu's approximation) change values only, never the graph
    inplace = bool(kwargs.get("inplace", args[pos] if pos is not None and len(args) > pos else False))
    if inplace:

        def forward(ctx: Any, t: torch.Tensor) -> torch.Tensor:
            ctx.mark_dirty(t)
            return t

        cls = _stand_in((func, True), lambda: func(_meta(1), *probe_args, inplace=True), forward)
    else:
        cls = _stand_in((func, False), lambda: func(_meta(1), *probe_args), lambda ctx, t: empty_like(t))
    return cls.apply(x)


def _addmm(bias: torch.Tensor, m1: torch.Tensor, m2: torch.Tensor) -> torch.Tensor:
    cls = _stand_in(
        "addmm",
        lambda: torch.addmm(_meta(1), _meta(1, 1), _meta(1, 1)),
        lambda ctx, b, x, y: new_empty(x, (x.shape[0], y.shape[1])),
    )
    return cls.apply(bias, m1, m2)


def _add_bias_(out: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    def forward(ctx: Any, t: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ctx.mark_dirty(t)
        return t

    return _stand_in("add_", lambda: _meta(1).add_(_meta(1)), forward).apply(out, bias)


def _linear(args: tuple, kwargs: dict) -> Optional[torch.Tensor]:
    names = ("input", "weight", "bias")
    bound = dict(zip(names, args, strict=False))
    bound.update(kwargs)
    x, w, b = bound.get("input"), bound.get("weight"), bound.get("bias")
    if not all(isinstance(t, torch.Tensor) and t.is_meta for t in (x, w, b)):
        return None  # without a bias PyTorch's linear is a matmul, which is fast on meta tensors
    if x.dim() < 2 or w.dim() != 2 or b.dim() != 1 or x.shape[-1] != w.shape[1] or b.shape[0] != w.shape[0]:
        return None  # let PyTorch handle (or reject) anything unusual
    if x.dim() == 2:
        return _addmm(b, x, w.t())
    if x.is_contiguous():
        flat = x.view(math.prod(x.shape[:-1]), x.shape[-1])
        return _addmm(b, flat, w.t()).view(*x.shape[:-1], w.shape[0])
    return _add_bias_(torch.matmul(x, w.t()), b)


# binary elementwise ops: function -> (probe operation, in place)
_BINARY: dict[Callable[..., Any], tuple[Callable[..., Any], bool]] = {
    torch.Tensor.add: (torch.add, False),
    torch.add: (torch.add, False),
    torch.Tensor.mul: (torch.mul, False),
    torch.mul: (torch.mul, False),
    torch.Tensor.add_: (torch.Tensor.add_, True),
    torch.Tensor.mul_: (torch.Tensor.mul_, True),
}


def _binary(func: Callable[..., Any], args: tuple, kwargs: dict) -> Optional[torch.Tensor]:
    """``a + b`` / ``a * b`` (and their in-place forms) on meta tensors or Python numbers.

    Out of place, the output gets PyTorch's strides (:mod:`ghn_init.graph.elementwise_layout`; contiguous
    when every operand has the standard strides); in place, the output is ``a``, which must be non-overlapping
    and dense unless it has the standard strides (PyTorch refuses to write into an expanded tensor).
    """
    if len(args) != 2 or set(kwargs) - {"alpha"}:
        return None  # ``out=`` and other rare forms run for real
    a, b = args
    tensors = [t for t in (a, b) if isinstance(t, torch.Tensor)]
    if not all(t.is_meta for t in tensors) or not all(isinstance(t, (torch.Tensor, int, float, bool)) for t in (a, b)):
        return None
    if not any(t.requires_grad for t in tensors):
        return None  # nothing is recorded: let PyTorch do it
    shape = broadcast_shape(*(t.shape for t in tensors))
    if shape is None:
        return None  # PyTorch raises its own error
    dtype = torch.result_type(a, b)
    standard = all(_standard(t) for t in tensors)
    probe_op, inplace = _BINARY[func]
    if inplace:
        if shape != a.shape or not torch.can_cast(dtype, a.dtype):
            return None  # PyTorch raises its own error
        if not standard and not is_non_overlapping_and_dense(a.shape, a.stride()):
            return None

        def forward(ctx: Any, x: torch.Tensor, y: Any) -> torch.Tensor:
            ctx.mark_dirty(x)
            return x

        cls = _stand_in((probe_op, True), lambda: probe_op(_meta(1), _meta(1)), forward)
        return cls.apply(a, b)
    if standard:
        strides: Optional[tuple[int, ...]] = _contiguous_strides(torch.Size(shape))
    elif kwargs or any(t.dtype != dtype for t in tensors):
        return None  # an ``alpha`` or a dtype conversion makes intermediate tensors whose layout PyTorch decides
    else:
        strides = elementwise_strides(shape, [expanded_strides(t.shape, t.stride(), shape) for t in tensors])
        if strides is None:
            return None
    cls = _stand_in(
        (probe_op, False),
        lambda: probe_op(_meta(1), _meta(1)),
        lambda ctx, x, y, shape, strides, dtype: torch.empty_strided(shape, strides, dtype=dtype, device="meta"),
    )
    return cls.apply(a, b, shape, strides, dtype)


def _adaptive_avg_pool2d(args: tuple, kwargs: dict) -> Optional[torch.Tensor]:
    bound = dict(zip(("input", "output_size"), args, strict=False))
    bound.update(kwargs)
    x, size = bound.get("input"), bound.get("output_size")
    if not (isinstance(x, torch.Tensor) and x.dim() == 4 and _standard(x) and x.requires_grad):
        return None
    size = (size, size) if isinstance(size, int) else tuple(size) if isinstance(size, (tuple, list)) else None
    if size is None or len(size) != 2:
        return None
    size = tuple(int(x.shape[2 + i]) if v is None else int(v) for i, v in enumerate(size))
    # PyTorch takes a mean for a 1x1 output (MeanBackward1) and a pooling kernel otherwise: one class each
    key = ("adaptive_avg_pool2d", size == (1, 1))
    cls = _stand_in(
        key,
        lambda: F.adaptive_avg_pool2d(_meta(1, 1, 2, 2), 1 if size == (1, 1) else 2),
        lambda ctx, t, shape: new_empty(t, shape),
    )
    return cls.apply(x, (*x.shape[:2], *size))


def _pair(v: Any) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _conv2d(args: tuple, kwargs: dict) -> Optional[torch.Tensor]:
    names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
    bound = {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1}
    bound.update(zip(names, args, strict=False))
    bound.update(kwargs)
    x, w, b = bound["input"], bound["weight"], bound["bias"]
    if not (isinstance(x, torch.Tensor) and isinstance(w, torch.Tensor) and w.is_meta):
        return None
    if b is not None and not (isinstance(b, torch.Tensor) and b.is_meta and b.dim() == 1 and b.shape[0] == w.shape[0]):
        return None
    groups = int(bound["groups"])
    if x.dim() != 4 or w.dim() != 4 or groups < 1 or x.shape[1] != w.shape[1] * groups or w.shape[0] % groups:
        return None  # unbatched or malformed calls: PyTorch handles (or rejects) them
    stride, dilation, padding = _pair(bound["stride"]), _pair(bound["dilation"]), bound["padding"]
    size = []
    for i in range(2):
        span = dilation[i] * (w.shape[2 + i] - 1) + 1
        if padding == "same":
            size.append(x.shape[2 + i])
            continue
        pad = 0 if padding == "valid" else _pair(padding)[i]
        n = (x.shape[2 + i] + 2 * pad - span) // stride[i] + 1
        if n < 1:
            return None  # PyTorch raises its own error for a kernel larger than the padded input
        size.append(n)
    cls = _stand_in(
        "conv2d",
        lambda: F.conv2d(_meta(1, 1, 1, 1), _meta(1, 1, 1, 1), _meta(1)),
        lambda ctx, x, w, b, shape: new_empty(x, shape),  # meta convolutions return contiguous outputs
    )
    return cls.apply(x, w, b, (x.shape[0], w.shape[0], *size))


def _strides_like_channels_last(shape: torch.Size, strides: tuple[int, ...]) -> bool:
    """PyTorch's test of whether strides follow a channels-last order (``suggest_memory_format``), on plain ints."""
    order = {4: (1, 3, 2, 0), 5: (1, 4, 3, 2, 0)}.get(len(shape))
    if order is None or strides[1] == 0:
        return False
    low = 0
    for d in order:
        if shape[d] == 0 or strides[d] < low or (d == 0 and low == strides[1]):
            return False
        low = strides[d] * shape[d]
    return True


def _cat_format(tensors: list[torch.Tensor]) -> torch.memory_format:
    """The memory format of ``torch.cat``'s output: channels-last only if every input suggests the same one."""
    fmt = None
    for t in tensors:
        f = torch.contiguous_format
        if _strides_like_channels_last(t.shape, t.stride()):
            f = torch.channels_last if t.dim() == 4 else torch.channels_last_3d
        if f == torch.contiguous_format or (fmt is not None and f != fmt):
            return torch.contiguous_format
        fmt = f
    return fmt or torch.contiguous_format


def _cat(args: tuple, kwargs: dict) -> Optional[torch.Tensor]:
    """``torch.cat`` of meta tensors of one dtype and rank (PyTorch's meta ``cat`` is a Python reference, about
    0.2 ms per input: most of DenseNet's recording)."""
    if set(kwargs) - {"tensors", "dim"} or len(args) > 2:
        return None  # ``out=`` runs for real
    bound = {**dict(zip(("tensors", "dim"), args, strict=False)), **kwargs}
    tensors, dim = bound.get("tensors"), bound.get("dim", 0)
    if not isinstance(tensors, (list, tuple)) or not tensors or not isinstance(dim, int) or isinstance(dim, bool):
        return None
    first = tensors[0]
    if not isinstance(first, torch.Tensor):
        return None
    n = first.dim()
    if n == 0 or not -n <= dim < n:
        return None
    dim %= n
    dtype, before, after = first.dtype, first.shape[:dim], first.shape[dim + 1 :]
    size, grad = 0, False
    for t in tensors:  # meta tensors of one rank and dtype, equal sizes off ``dim``: anything else goes to PyTorch
        if not isinstance(t, torch.Tensor) or not t.is_meta or t.dtype != dtype or t.layout != torch.strided:
            return None
        s = t.shape
        if len(s) != n or s[:dim] != before or s[dim + 1 :] != after:
            return None
        size += s[dim]
        grad = grad or t.requires_grad
    if not grad:
        return None
    shape = (*before, size, *after)
    cls = _stand_in(
        "cat",
        lambda: torch.cat([_meta(1), _meta(1)]),
        lambda ctx, *a: torch.empty(a[-2], dtype=a[0].dtype, device=a[0].device, memory_format=a[-1]),
    )
    return cls.apply(*tensors, shape, _cat_format(list(tensors)))


# every function :func:`meta_stand_in` may stand in for (it returns None for any other)
STAND_IN_FUNCTIONS = frozenset((torch.cat, *_UNARY, F.linear, F.conv2d, *_BINARY, F.adaptive_avg_pool2d))


def meta_stand_in(func: Callable[..., Any], args: tuple, kwargs: dict) -> Optional[torch.Tensor]:
    """The stand-in result of ``func(*args, **kwargs)`` on meta tensors, or None to run the real call.

    Args:
        func: the function a torch-function mode intercepted.
        args, kwargs: its arguments.

    Returns:
        None unless ``func`` is one of the operations above, called on a meta tensor while grad mode
        is on; otherwise a meta tensor with the real call's shape and autograd nodes.

    Example:
        >>> x = torch.empty(2, 8, device="meta", requires_grad=True).clone()
        >>> type(meta_stand_in(F.hardswish, (x,), {}).grad_fn).__name__
        'HardswishBackward0'
    """
    if func is torch.cat:
        return _cat(args, kwargs) if torch.is_grad_enabled() else None
    if not args or not isinstance(args[0], torch.Tensor) or not args[0].is_meta or not torch.is_grad_enabled():
        return None
    if func in _UNARY:
        return _unary(func, args, kwargs) if args[0].requires_grad else None
    if func is F.linear:
        return _linear(args, kwargs)
    if func is F.conv2d:
        return _conv2d(args, kwargs)
    if func in _BINARY:
        return _binary(func, args, kwargs)
    if func is F.adaptive_avg_pool2d:
        return _adaptive_avg_pool2d(args, kwargs)
    return None
