"""Models for :func:`ghn_init.compare` by name: torchvision, ``timm/NAME``, or the built-in ``small_vit`` and
``small_vgg``."""

from __future__ import annotations

from typing import Callable, Union

import torch.nn as nn

__all__ = ["build_model", "small_vit", "small_vgg", "BUILT_IN"]

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


def small_vgg(num_classes: int = 10, image_size: int = 32) -> nn.Module:
    """A small VGG-style CNN without any normalization: three stages of two 3x3 convolutions with ReLU (widths 32,
    64, 128) each followed by 2x2 max pooling, global average pooling and a linear classifier (0.29M parameters).

    Nothing rescales its activations, so how an init sets each layer's scale shows in how it trains: the leaderboard's
    model without BatchNorm (torchvision's ``squeezenet1_1`` stayed at chance under every scheme there).

    Example:
        >>> import torch
        >>> small_vgg(10)(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """
    del image_size  # any size of at least 8 pixels works (global pooling)
    layers: list[nn.Module] = []
    channels = 3
    for width in (32, 64, 128):
        for _ in range(2):
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True)]
            channels = width
        layers.append(nn.MaxPool2d(2))
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)]
    return nn.Sequential(*layers)


# Built-in models by name (besides torchvision names and timm/NAME)
BUILT_IN: dict[str, Callable[..., nn.Module]] = {"small_vit": small_vit, "small_vgg": small_vgg}


def build_model(name: str, num_classes: int, image_size: int) -> nn.Module:
    """``resnet18`` (torchvision), ``timm/NAME`` (timm; ViT-like models get ``img_size``), or a built-in
    (``small_vit``, ``small_vgg``).

    Raises:
        UnknownModelError: an unknown name.
    """
    from ..models import create_model

    if name in BUILT_IN:
        return BUILT_IN[name](num_classes, image_size)
    kwargs = {"num_classes": num_classes}
    if name.startswith("timm/") and any(k in name for k in ("vit", "deit", "swin", "mixer", "beit", "eva")):
        kwargs["img_size"] = image_size  # these fix the input size at construction
    return create_model(name, **kwargs)
