"""From a decoder's max-sized output to a model tensor: crop, tile and scale as the published GHNs do.

:meth:`ghn_init.GHN.forward` runs the decoders and calls :func:`fit_to_shape` on each output.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch

from .tiling import SMALL, Tiled, tile


def fit_to_shape(
    w: torch.Tensor,
    shape: Sequence[int],
    centre_crop: bool,
    is_weight: Optional[bool] = None,
    generator: Optional[torch.Generator] = None,
    defer_tiling: bool = False,
) -> Union[torch.Tensor, Tiled]:
    """Crop a decoded tensor to ``shape`` and tile it along channels where the shape is larger.

    With ``is_weight`` set, the published weight normalization (:func:`scale`) is applied to the
    cropped tensor before tiling; it is elementwise with a factor that depends only on ``shape``,
    so this equals normalizing the full tensor, without an extra full-size temporary.

    Position embeddings (``(1, tokens, dim)``) with a class token get that token's row drawn from
    N(0, 0.02) as published: from ``generator`` (a CPU generator, then moved) if given, else from
    torch's global RNG on ``w``'s device.

    With ``defer_tiling``, a tensor of at least :data:`~ghn_init.tiling.SMALL` elements that is made by
    tiling alone (no crop after it) is returned as a :class:`~ghn_init.tiling.Tiled`, for the writer to
    tile into the model's own tensor; everything else as a tensor.
    """
    t = tuple(shape)
    s = w.shape
    if len(t) == 1 and len(s) == 1 and is_weight is None and s[0] >= t[0]:
        return w[: t[0]]  # a 1-D row already scaled (and tiled) with its group: a crop (most norm layers)
    if len(t) == 1:
        w = w[: t[0]] if len(s) == 1 else (w[: t[0], 0] if len(s) == 2 else w[: t[0], 0, s[-2] // 2, s[-1] // 2])
    elif len(t) == 2:
        w = w[: t[0], : t[1]] if len(s) == 2 else w[: t[0], : t[1], s[-2] // 2, s[-1] // 2]
    elif len(t) == 3:
        if len(s) == 3:
            w = w[: t[0], : t[1], : t[2]]
        else:  # token embeddings decoded as a (1, dim, side, side) map
            w = w.reshape(s[0], s[1], -1).permute(0, 2, 1)[: t[0], : t[1], : t[2]]
            # a class token was never seen in training: draw it like timm/torchvision initialize one
            size = (1, 1, w.shape[2])
            if generator is None:
                cls = torch.normal(mean=0.0, std=0.02, size=size, device=w.device)
            else:
                cls = torch.normal(mean=0.0, std=0.02, size=size, generator=generator).to(w.device)
            cls = cls.to(w.dtype)
            w = torch.cat((cls, w), dim=1)
    else:
        if len(s) > 2:
            w = w[: t[0], : t[1]]
            w = _crop_spatial(w, min(t[2], s[2]), min(t[3], s[3]) if len(s) > 3 else 1, centre_crop)
        else:
            w = w[: t[0], : t[1]].unsqueeze(2).unsqueeze(3)
            if t[2] > 1 or t[3] > 1:  # a k x k conv decoded as a classifier (last layer): tile the 1 x 1 kernel
                w = w.repeat(1, 1, t[2], t[3])
    if is_weight is not None:
        w = scale(w, is_weight, shape=t)
    s = w.shape
    tiled = t[:2] if len(t) != 3 or len(s) != 3 or t[1] > s[1] else t  # the published code tiles dim 2 of 3-D
    if defer_tiling and len(s) == len(t) and math.prod(t) >= SMALL and tuple(s) != t:
        # tiling alone makes the tensor when each dimension is tiled up to its size or already has it
        if all(s[d] == t[d] or (d < len(tiled) and s[d] < t[d]) for d in range(len(t))):
            return Tiled(w, t)
    w = tile(w, tiled)  # tensors only where dim 1 needs no tiling; one exactly sized copy
    if len(t) <= 3:
        return w[tuple(slice(0, d) for d in t)]
    return _crop_spatial(w[: t[0], : t[1]], t[2], t[3], centre_crop)


def _crop_spatial(w: torch.Tensor, h: int, wd: int, centre: bool) -> torch.Tensor:
    if not centre:
        return w[:, :, :h, :wd]
    ch, cw = w.shape[-2] // 2, w.shape[-1] // 2
    return w[:, :, ch - h // 2 : ch + math.ceil(h / 2), cw - wd // 2 : cw + math.ceil(wd / 2)]


def fan_in_factor(shape: Sequence[int]) -> Optional[float]:
    """The factor :func:`scale` multiplies a tensor of ``shape`` (two or more dimensions) by: ``sqrt(g / fan_in)``,
    ``g`` = 2 (weights before ReLUs) or 1 (depthwise kernels, and kernels wider than tall); None for position
    embeddings (``(1, tokens >= 11, ...)``), which are used as predicted.

    Example:
        >>> fan_in_factor((64, 32, 3, 3)) == (2 / (32 * 9)) ** 0.5
        True
    """
    sz = tuple(shape)
    if len(sz) > 2 and sz[2] >= 11 and sz[0] == 1:
        return None
    no_relu = len(sz) > 2 and (sz[1] == 1 or sz[2] < sz[3])
    return ((1.0 if no_relu else 2.0) / math.prod(sz[1:])) ** 0.5


def scale(p: torch.Tensor, is_weight: bool, shape: Optional[Sequence[int]] = None) -> torch.Tensor:
    """Fan-in scaling of weights (x2 before ReLUs, :func:`fan_in_factor`); norm weights into (0, 2), biases into
    (-1, 1).

    ``shape`` is the final tensor shape (default: ``p.shape``); the fan-in factor depends on it only.
    """
    sz = tuple(shape) if shape is not None else tuple(p.shape)
    if len(sz) > 1:
        factor = fan_in_factor(sz)
        return p if factor is None else p * factor
    return 2 * torch.sigmoid(0.5 * p) if is_weight else torch.tanh(0.2 * p)


# A group of 1-D predictions is tiled as a whole (one copy instead of one per tensor) up to this many elements.
GROUP_TILE_MAX = 1 << 20


def fit_vector_group(decoded: torch.Tensor, length: int, weight_norm: bool) -> torch.Tensor:
    """A group of decoded 1-D predictions, (n, 2, C) (rows: weight, bias), scaled and tiled once for all of them.

    :func:`fit_to_shape` fits each 1-D tensor by cropping its row to the tensor's length (or tiling it up to
    that length) and, with ``weight_norm``, scaling it (:func:`scale`: a weight row into (0, 2), a bias row
    into (-1, 1)). Both are elementwise, and tiling repeats a row from its start, so doing them once on the
    group, up to the longest ``length``, leaves each tensor a crop of its row: ``fit_to_shape(out[j][r],
    shape, centre, None)`` equals ``fit_to_shape(decoded[j][r], shape, centre, r == 0)`` for every
    ``shape[0] <= length``. For a norm layer with 100 channels fitted from 64, one ``repeat`` for the group
    replaces one per tensor, and two scaling passes replace four small ops per tensor. A group that would
    tile to more than :data:`GROUP_TILE_MAX` elements is only scaled.

    Example:
        >>> d = torch.randn(3, 2, 4)
        >>> out = fit_vector_group(d, 6, weight_norm=True)
        >>> torch.allclose(out[1][0], fit_to_shape(d[1][0], (6,), True, True))
        True
    """
    if weight_norm:
        decoded = torch.stack((scale(decoded[:, 0], True, (1,)), scale(decoded[:, 1], False, (1,))), 1)
    if length > decoded.shape[-1] and decoded.shape[0] * 2 * length <= GROUP_TILE_MAX:
        decoded = tile(decoded, (decoded.shape[0], decoded.shape[1], length))
    return decoded
