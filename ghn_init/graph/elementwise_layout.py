"""The memory layout PyTorch gives the output of an elementwise operation, worked out on plain ints.

On meta tensors, ``a * b`` and ``a + b`` run PyTorch's Python reference implementation, and most of
its cost (about 140 us a call, against a few us for a shape-only stand-in) is working out the output's
strides with symbolic-shape-aware helpers. Those strides matter while recording: a later ``view``
succeeds or raises, and a ``reshape`` copies or not, by them. This module gives the same strides
from sizes and strides alone, so that the stand-ins of :mod:`ghn_init.graph.meta_ops` can cover
non-contiguous operands (ConvNeXt's ``layer_scale * x`` on a permuted tensor, for one).

The rule (``torch._prims_common.compute_elementwise_output_strides``, which the meta reference uses):

1. Each tensor operand is broadcast to the output's shape (``expand``: new leading dimensions and
   size-1 dimensions stretched to a larger size get stride 0; same-shaped operands are left as they are).
2. If every operand is contiguous (size-1 dimensions ignored) and not every one is channels-last, the
   output is contiguous; if every one is channels-last (4-D) and not every one contiguous, it is
   channels-last.
3. Otherwise the dimensions are put in order by an insertion sort, from the last dimension to the
   first, that asks each operand in turn: a dimension with the smaller stride goes inside (stride 0,
   a broadcast dimension, says nothing; for equal strides, the shorter dimension goes inside); the
   output is contiguous in that order.

Worked example: ``s * x`` with ``s`` of shape (384, 1, 1) and ``x`` a (2, 384, 14, 14) tensor permuted
from channels-last memory (strides (75264, 1, 5376, 384)). Broadcast, ``s`` has strides (0, 1, 0, 0) and
is not contiguous, so rule 2 does not apply. Sorting: ``s`` says nothing about dimensions 0, 2 and 3 (stride
0); ``x`` puts dimension 1 (stride 1) innermost, then 3 (384), 2 (5376) and 0 (75264): the output is laid out
as ``x``, strides (75264, 1, 5376, 384).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

Shape = Sequence[int]
Strides = tuple[int, ...]


def expanded_strides(size: Shape, strides: Strides, shape: Shape) -> Strides:
    """The strides of a tensor of ``size``/``strides`` broadcast to ``shape`` (``Tensor.expand``; a tensor
    already of that shape keeps its strides).

    A dimension stretched from size 1 gets stride 0. A new leading dimension of size 1 gets the stride
    ``expand`` gives it, the size times the stride of the dimension inside it (1 for the innermost); one of a
    larger size gets 0.

    Example:
        >>> expanded_strides((384, 1, 1), (1, 1, 1), (2, 384, 14, 14))
        (0, 1, 0, 0)
        >>> expanded_strides((2,), (1,), (1, 2))
        (2, 1)
    """
    if tuple(size) == tuple(shape):
        return tuple(strides)
    ndim, lead = len(shape), len(shape) - len(size)
    out = [0] * ndim
    for i in range(ndim - 1, -1, -1):
        d = i - lead
        if d >= 0:
            n, stride = size[d], strides[d]
        else:
            n, stride = 1, 1 if i == ndim - 1 else shape[i + 1] * out[i + 1]
        out[i] = stride if n == shape[i] else 0
    return tuple(out)


def contiguous_strides(shape: Shape) -> Strides:
    """The strides ``torch.empty(shape)`` has."""
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


def _contiguous_in(shape: Shape, strides: Strides, order: Sequence[int]) -> bool:
    """Whether the dimensions of ``shape``, innermost first in ``order``, are nested in memory (size-1
    dimensions, whose stride is never used, are skipped)."""
    expected = 1
    for d in order:
        if shape[d] == 1:
            continue
        if strides[d] != expected:
            return False
        expected *= shape[d]
    return True


def is_contiguous(shape: Shape, strides: Strides) -> bool:
    """``Tensor.is_contiguous()`` on plain ints."""
    return math.prod(shape) < 2 or _contiguous_in(shape, strides, range(len(shape) - 1, -1, -1))


def is_channels_last(shape: Shape, strides: Strides) -> bool:
    """``Tensor.is_contiguous(memory_format=torch.channels_last)`` on plain ints (4-D tensors only)."""
    return len(shape) == 4 and _contiguous_in(shape, strides, (1, 3, 2, 0))


def is_non_overlapping_and_dense(shape: Shape, strides: Strides) -> bool:
    """Whether the elements fill one block of memory in some order of the dimensions (PyTorch's
    ``is_non_overlapping_and_dense``): a permuted contiguous tensor is; a slice with gaps or an
    expanded tensor is not."""
    if math.prod(shape) < 2:
        return True
    if len(shape) == 1:
        return strides[0] == 1
    order = sorted(range(len(shape)), key=lambda d: strides[d])  # stable: ties keep dimension order
    return _contiguous_in(shape, strides, order)


def _ge(a: int, b: int) -> bool:
    """PyTorch's size-oblivious ``a >= b`` of the stride sort (sizes and strides are never negative)."""
    if b == 0:
        return True
    if a == 0:
        return False
    return a >= b or a % b == 0


def _compare(shape: Shape, operands: Sequence[Strides], a: int, b: int) -> int:
    """1: dimension ``a`` goes inside ``b``; -1: it stays outside; 0: no operand decides."""
    for strides in operands:
        sa, sb = strides[a], strides[b]
        if sa == 0 or sb == 0:
            continue  # a broadcast dimension says nothing about the layout
        if sa == sb:
            if _ge(shape[b], shape[a]):
                continue
            return 1
        if _ge(sb, sa):
            return -1
        if _ge(sa, sb):
            return 1
    return 0


def elementwise_strides(shape: Shape, operands: Sequence[Strides]) -> Optional[Strides]:
    """The strides of the output of an elementwise operation of shape ``shape``.

    Args:
        shape: the output's (broadcast) shape.
        operands: each tensor operand's strides, already broadcast to ``shape`` (:func:`expanded_strides`);
            Python numbers are not operands.

    Returns:
        The output's strides, as PyTorch's meta reference gives them; None for the cases left to PyTorch:
        no tensor operand, or a dimension of size 0.

    Example:
        >>> elementwise_strides((2, 384, 14, 14), [(0, 1, 0, 0), (75264, 1, 5376, 384)])
        (75264, 1, 5376, 384)
    """
    ndim = len(shape)
    if not operands or 0 in shape:
        return None
    if ndim == 0:
        return ()
    if ndim == 1:
        return (1,)
    contiguous = all(is_contiguous(shape, s) for s in operands)
    channels_last = all(is_channels_last(shape, s) for s in operands)
    if contiguous and not channels_last:
        return contiguous_strides(shape)
    if channels_last and not contiguous:
        order = [1, 3, 2, 0]  # innermost first
    else:
        order = list(range(ndim - 1, -1, -1))  # innermost first: sorted back to front
        for i in range(1, ndim):
            j = i
            for k in range(i - 1, -1, -1):
                c = _compare(shape, operands, order[k], order[j])
                if c > 0:
                    order[k], order[j] = order[j], order[k]
                    j = k
                elif c < 0:
                    break
    strides = [0] * ndim
    step = 1
    for d in order:
        strides[d] = step
        step *= shape[d]
    return tuple(strides)
