"""Models for :func:`ghn_init.compare` by name: torchvision, ``timm/NAME``, or the built-in ``small_vit``."""

from __future__ import annotations

from typing import Callable, Union

import torch.nn as nn

__all__ = ["build_model", "small_vit"]

ModelSpec = Union[str, Callable[[], nn.Module]]


def small_vit(num_classes: int = 10, image_size: int = 32) -> nn.Module:
    """A small torchvision ViT for small images: 4 layers, width 128, 4 heads, 4x4 patches."""
    import torchvision

    return torchvision.models.VisionTransformer(
        image_size=image_size,
        patch_size=4,
        num_layers=4,
        num_heads=4,
        hidden_dim=128,
        mlp_dim=256,
        num_classes=num_classes,
    )


def build_model(name: str, num_classes: int, image_size: int) -> nn.Module:
    """``resnet18`` (torchvision), ``timm/NAME`` (timm; ViT-like models get ``img_size``) or ``small_vit``.

    Raises:
        UnknownModelError: an unknown name.
    """
    from ..models import create_model

    if name == "small_vit":
        return small_vit(num_classes, image_size)
    kwargs = {"num_classes": num_classes}
    if name.startswith("timm/") and any(k in name for k in ("vit", "deit", "swin", "mixer", "beit", "eva")):
        kwargs["img_size"] = image_size  # these fix the input size at construction
    return create_model(name, **kwargs)
