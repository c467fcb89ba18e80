"""Tiling a decoded tensor along its channel dimensions, straight into a tensor of the final size.

The published GHNs tile a decoded (at most 64x64) block to fill a larger tensor with
``Tensor.repeat`` along one dimension, then the next, then crop the excess. :func:`tile` gives the
same values with one exactly sized, contiguous result: no intermediate per dimension, nothing to
crop, and nothing for the writer to copy again (it takes a tensor that owns exactly its storage
as it is).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

# Below this many elements, one ``repeat`` and a view cost less than the block copies of :func:`_tile_dim`
# (PyTorch's per-call overhead dominates); the writer then copies the small result once.
SMALL = 1 << 15


def _tile_dim(w: torch.Tensor, dim: int, size: int, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``w`` repeated along ``dim`` and cut to ``size`` there, as one new contiguous tensor (or into ``out``)."""
    s = w.shape[dim]
    if out is None:
        out = w.new_empty((*w.shape[:dim], size, *w.shape[dim + 1 :]))
    full = size // s
    if full:
        blocks = out.narrow(dim, 0, full * s).view(*w.shape[:dim], full, s, *w.shape[dim + 1 :])
        blocks.copy_(w.unsqueeze(dim).expand(*w.shape[:dim], full, *w.shape[dim:]))
    rest = size - full * s
    if rest:
        out.narrow(dim, full * s, rest).copy_(w.narrow(dim, 0, rest))
    return out


def tile(w: torch.Tensor, sizes: Sequence[int], out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``w.repeat(...)`` cut to ``sizes`` along the dimensions where ``sizes`` is larger than ``w``.

    Args:
        w: the tensor to tile.
        sizes: the wanted size of each leading dimension of ``w`` (a dimension where ``sizes`` is not
            larger than ``w`` is left as it is; trailing dimensions without a size are kept).
        out: a contiguous tensor of the result's shape and ``w``'s dtype to write the result into.

    Returns:
        ``out`` when given; else ``w`` itself when nothing is tiled; otherwise a tensor equal to
        ``w.repeat(r0, r1, ...)[: sizes[0], : sizes[1], ...]`` with ``r_i = ceil(sizes[i] / w.shape[i])``:
        a new contiguous tensor of exactly that size, or, for results under ``SMALL`` elements or when
        ``w`` needs a gradient (GHN training), that very ``repeat`` expression.

    Example:
        >>> w = torch.arange(6.0).view(2, 3)
        >>> tile(w, (3, 5)).tolist()
        [[0.0, 1.0, 2.0, 0.0, 1.0], [3.0, 4.0, 5.0, 3.0, 4.0], [0.0, 1.0, 2.0, 0.0, 1.0]]
    """
    dims = [d for d, size in enumerate(sizes) if size > w.shape[d]]
    if not dims:
        return w if out is None else out.copy_(w)
    numel = math.prod(max(sizes[d], w.shape[d]) if d < len(sizes) else w.shape[d] for d in range(w.dim()))
    if out is None and (numel < SMALL or (w.requires_grad and torch.is_grad_enabled())):
        reps = [math.ceil(sizes[d] / w.shape[d]) if d in dims else 1 for d in range(w.dim())]
        return w.repeat(reps)[tuple(slice(0, sizes[d]) if d in dims else slice(None) for d in range(w.dim()))]
    order = sorted(dims, reverse=True)  # the last dimension first: every copy then writes the least
    for d in order:
        w = _tile_dim(w, d, sizes[d], out=out if d == order[-1] else None)
    return w


class Tiled:
    """A tiled tensor not made yet: ``block`` repeated along each dimension up to ``shape``.

    :func:`ghn_init.GHN.forward` returns large tiled predictions this way when asked to
    (``defer_tiling=True``, as ``apply`` does for predictions it writes unchanged), so that the writer
    tiles each one straight into the model's own tensor (:meth:`write_into`): no model-sized temporary,
    and no freshly allocated memory to fault in page by page (on a 2-core CPU that was a third of
    resnet50's apply). The values are exactly those of :meth:`materialize`.

    Attributes:
        block: the tensor to repeat; ``block.shape[d] <= shape[d]`` in every dimension.
        shape: the tensor's shape.

    Example:
        >>> t = Tiled(torch.arange(4.0).view(2, 2), (3, 4))
        >>> out = torch.empty(3, 4)
        >>> t.write_into(out)
        >>> torch.equal(out, t.materialize())
        True
    """

    __slots__ = ("block", "shape")

    def __init__(self, block: torch.Tensor, shape: Sequence[int]):
        shape = tuple(shape)
        if block.dim() != len(shape) or any(b > s for b, s in zip(block.shape, shape, strict=True)):
            raise ValueError(f"a block of shape {tuple(block.shape)} cannot tile to {shape}")
        self.block = block
        self.shape = shape

    @property
    def dtype(self) -> torch.dtype:
        return self.block.dtype

    def materialize(self) -> torch.Tensor:
        """The tensor, as :func:`tile` makes it."""
        return tile(self.block, self.shape)

    def write_into(self, out: torch.Tensor) -> None:
        """Tile the block into ``out`` (contiguous, of ``shape``), converted to ``out``'s dtype.

        The block is converted first; conversion is elementwise, so this equals converting the
        materialized tensor.
        """
        if tuple(out.shape) != self.shape or not out.is_contiguous():
            raise ValueError(f"cannot tile into a tensor of shape {tuple(out.shape)}: need a contiguous {self.shape}")
        tile(self.block.to(dtype=out.dtype, device=out.device), self.shape, out=out)

    def __repr__(self) -> str:
        return f"Tiled(block={tuple(self.block.shape)}, shape={self.shape}, dtype={self.dtype})"
