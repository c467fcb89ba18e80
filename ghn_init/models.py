"""Build a model from a short name: ``resnet50`` (torchvision) or ``timm/convnext_tiny`` (timm).

Used by the command line and the examples; any ``nn.Module`` can be given to :func:`ghn_init.apply` directly.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch.nn as nn

from .errors import UnknownModelError

TIMM_PREFIX = "timm/"


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """A freshly initialized torchvision or timm model, built without downloading pretrained weights.

    Args:
        name: a torchvision model name (``torchvision.models.list_models()``) or ``timm/NAME``
            (``timm.list_models()``).
        **kwargs: passed to the model's constructor (``num_classes=10``, ``in_chans=1``, ...).

    Returns:
        The model, in training mode, with its default initialization.

    Raises:
        UnknownModelError: no torchvision or timm model has that name.

    Example:
        >>> from ghn_init.models import create_model
        >>> create_model("timm/resnet18", num_classes=10).fc.out_features
        10
    """
    if name.startswith(TIMM_PREFIX):
        import timm

        arch = name[len(TIMM_PREFIX) :]
        if not timm.is_model(arch):
            raise UnknownModelError(
                f"timm has no model {arch!r}; list them with timm.list_models('{arch[:4]}*')", name=name
            )
        return timm.create_model(arch, pretrained=False, **kwargs)
    import torchvision

    if name not in torchvision.models.list_models():
        raise UnknownModelError(
            f"torchvision has no model {name!r}; use a name from torchvision.models.list_models() or timm/NAME",
            name=name,
        )
    builder = torchvision.models.get_model_builder(name)
    if "weights_backbone" in inspect.signature(builder).parameters:
        kwargs.setdefault("weights_backbone", None)  # detection models would otherwise download ImageNet weights
    return builder(weights=None, **kwargs)
