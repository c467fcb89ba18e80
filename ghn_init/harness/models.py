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
        image_size=image_size, patch_size=4, num_layers=4, num_heads=4, hidden_dim=128, mlp_dim=256,
        num_classes=num_classes,
    )


def build_model(name: str, num_classes: int, image_size: int) -> nn.Module:
    """``resnet18`` (torchvision), ``timm/NAME`` (timm; ViTs get ``img_size``) or ``small_vit``.

    Raises:
        ValueError: an unknown name.
    """
    if name == "small_vit":
        return small_vit(num_classes, image_size)
    if name.startswith("timm/"):
        import timm

        arch = name[len("timm/") :]
        if not timm.is_model(arch):
            raise ValueError(f"unknown timm model {arch!r}")
        kwargs = {"num_classes": num_classes}
        if any(k in arch for k in ("vit", "deit", "swin", "mixer", "beit", "eva")):
            kwargs["img_size"] = image_size  # these fix the input size at construction
        return timm.create_model(arch, **kwargs)
    import torchvision

    try:
        return torchvision.models.get_model(name, num_classes=num_classes)
    except ValueError as e:
        raise ValueError(f"unknown model {name!r}; use a torchvision name, timm/NAME or small_vit") from e
