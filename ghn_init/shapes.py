"""How the GHNs see a ViT's token embeddings: a ``(1, tokens, dim)`` tensor as a ``(1, dim, side, side)`` map."""

from __future__ import annotations

import math
from typing import Optional, Sequence


def token_map_shape(shape: Sequence[int]) -> Optional[tuple[int, int, int, int]]:
    """The ``(1, dim, side, side)`` map shape of token embeddings of ``shape`` ``(1, tokens, dim)``, else None.

    The published GHNs describe (in the graph and to the shape encoder) and decode position
    embeddings as a square map of ``floor(sqrt(tokens))`` per side; a class token makes ``tokens``
    one more than a square, which the floor drops.

    Args:
        shape: a tensor shape.

    Returns:
        The map shape, or None when ``shape`` is not 3-D with a leading 1 and at least 2 tokens and 2 channels.

    Example:
        >>> token_map_shape((1, 197, 768))
        (1, 768, 14, 14)
        >>> token_map_shape((1, 1, 768)) is None  # a class token
        True
    """
    if len(shape) != 3 or shape[0] != 1 or min(shape[1:]) <= 1:
        return None
    side = int(math.floor(int(shape[1]) ** 0.5))
    return (1, int(shape[2]), side, side)
