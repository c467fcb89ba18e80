"""torchvision classes without importing torchvision: ``import ghn_init`` stays free of it.

A model (or layer) can only be an instance of a torchvision class if torchvision is already
imported, so the class is looked up in ``sys.modules`` and a missing torchvision means "no".
"""

from __future__ import annotations

import sys
from typing import Any, Optional

__all__ = ["torchvision_class", "is_torchvision"]


def torchvision_class(path: str) -> Optional[type]:
    """``torchvision.models.<path>`` (e.g. ``"convnext.LayerNorm2d"``) if torchvision is imported, else None.

    Args:
        path: dotted path under ``torchvision.models``.

    Returns:
        The class, or None if torchvision is not imported or has no such class.

    Example:
        >>> import torchvision
        >>> torchvision_class("VisionTransformer") is torchvision.models.VisionTransformer
        True
    """
    obj: Any = sys.modules.get("torchvision")
    if obj is None:
        return None
    for part in ("models", *path.split(".")):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj if isinstance(obj, type) else None


def is_torchvision(obj: Any, path: str) -> bool:
    """Whether ``obj`` is an instance of ``torchvision.models.<path>`` (False if torchvision is not imported)."""
    cls = torchvision_class(path)
    return cls is not None and isinstance(obj, cls)
