"""What to call a model with while recording it: input sizes read off the model, and example inputs.

A model's own layers say what it accepts more reliably than its config: timm keeps the pretrained
config's ``input_size`` (3, 224, 224) for ``create_model(..., in_chans=1)`` or ``img_size=32``, but the
stem conv has one input channel and the patch embedding knows its image size. So the size is read
from the layers first (:func:`infer_input_size`), and forwards that take more than one image batch
(RAFT's two frames) get one batch per required positional argument (:func:`default_inputs`).

torchvision and timm are never imported here (see :mod:`.libraries`).
"""

from __future__ import annotations

import inspect
from typing import Any, Optional, Sequence

import torch
import torch.nn as nn

from ..constants import DEFAULT_IMAGE_SIDE, INCEPTION_IMAGE_SIDE
from . import walk
from .libraries import is_torchvision

__all__ = ["infer_input_size", "input_size_candidates", "default_inputs", "prepare"]

DEFAULT_FRAMES = 16  # torchvision's video models are trained on 16-frame clips


def _pair(v: Any) -> Optional[tuple[int, int]]:
    if isinstance(v, int):
        return (v, v)
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(i, int) for i in v):
        return (int(v[0]), int(v[1]))
    return None


def _pretrained_cfg(model: nn.Module) -> dict:
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    return cfg if isinstance(cfg, dict) else {}


def _first_conv(model: nn.Module) -> Optional[nn.Module]:
    """The stem conv: timm's ``pretrained_cfg["first_conv"]`` if it names a conv, else the first conv defined."""
    name = _pretrained_cfg(model).get("first_conv")
    if isinstance(name, str):
        try:
            m = model.get_submodule(name)
        except AttributeError:
            m = None
        if isinstance(m, nn.modules.conv._ConvNd):
            return m
    for m in walk.modules(model):
        if isinstance(m, nn.modules.conv._ConvNd):
            return m
    return None


_SIZE_ATTRIBUTES = ("img_size", "image_size")  # timm's PatchEmbed; Hugging Face's patch embeddings, torchvision's ViT


def _image_size(model: nn.Module, conv: Optional[nn.Module] = None) -> Optional[tuple[int, int]]:
    """(H, W) the model's layers fix.

    timm's ``patch_embed.img_size``, torchvision ViT's ``image_size``, 299 for Inception-v3; else the nearest module
    around the stem conv that states an ``img_size``/``image_size`` (Hugging Face's ``ViTPatchEmbeddings`` and
    ``DeiTPatchEmbeddings`` hold ``image_size`` and refuse any other size, so a ``ViTForImageClassification`` built
    with ``config.image_size=64`` could not be recorded without ``input_size``); else a Hugging Face model's
    ``config.image_size``.
    """
    patch_embed = getattr(model, "patch_embed", None)
    if isinstance(patch_embed, nn.Module):
        size = _pair(getattr(patch_embed, "img_size", None))
        if size is not None:
            return size
    if is_torchvision(model, "VisionTransformer"):
        return _pair(getattr(model, "image_size", None))
    if is_torchvision(model, "Inception3"):
        return (INCEPTION_IMAGE_SIDE, INCEPTION_IMAGE_SIDE)
    for module in _enclosing(model, conv):
        for attr in _SIZE_ATTRIBUTES:
            size = _pair(getattr(module, attr, None))
            if size is not None:
                return size
    return _pair(getattr(getattr(model, "config", None), "image_size", None))


def _enclosing(model: nn.Module, inner: Optional[nn.Module]) -> list[nn.Module]:
    """``inner`` and the modules of ``model`` that contain it, the nearest first (empty if ``inner`` is None)."""
    if inner is None:
        return []
    name = next((n for n, m in walk.named_modules(model) if m is inner), None)
    if name is None:
        return []
    parts = name.split(".") if name else []
    return [model.get_submodule(".".join(parts[:i])) for i in range(len(parts), -1, -1)]


def infer_input_size(model: nn.Module) -> tuple[int, ...]:
    """The size of one input sample, without the batch dimension, read off the model.

    In order: ``model.expected_input_sz`` (an int or a full size); channels from the stem conv's
    ``in_channels`` (timm's ``pretrained_cfg["first_conv"]``, else the first conv defined), falling back
    to the pretrained config, then 3; the spatial size from the layers (timm ``patch_embed.img_size``,
    torchvision ViT ``image_size``, 299 for Inception-v3, the ``img_size``/``image_size`` of the nearest module
    around the stem conv, e.g. Hugging Face's ViT/DeiT patch embeddings, a Hugging Face model's
    ``config.image_size``), then the pretrained config's ``input_size``, then 224. A model whose stem is a
    ``Conv3d`` (video) gets ``(C, 16, H, W)``, a ``Conv1d`` ``(C, L)``.

    Args:
        model: the model.

    Returns:
        ``(C, H, W)``, ``(C, T, H, W)`` for video models, or ``(C, L)`` for 1D models.

    Example:
        >>> import timm
        >>> infer_input_size(timm.create_model("resnet18", in_chans=1))
        (1, 224, 224)
    """
    size = getattr(model, "expected_input_sz", None)
    if isinstance(size, int):
        return (3, size, size)
    if isinstance(size, (tuple, list)) and all(isinstance(i, int) for i in size):
        return tuple(size)
    cfg_size = _pretrained_cfg(model).get("input_size")
    cfg_size = tuple(cfg_size) if isinstance(cfg_size, (tuple, list)) and len(cfg_size) == 3 else None
    conv = _first_conv(model)
    channels = conv.in_channels if conv is not None else (cfg_size[0] if cfg_size else 3)
    hw = _image_size(model, conv) or (cfg_size[1:] if cfg_size else (DEFAULT_IMAGE_SIDE, DEFAULT_IMAGE_SIDE))
    if isinstance(conv, nn.Conv3d):
        return (channels, DEFAULT_FRAMES, *hw)
    if isinstance(conv, nn.Conv1d):
        return (channels, hw[0])
    return (channels, *hw)


def input_size_candidates(model: nn.Module) -> list[tuple[int, ...]]:
    """Input sizes to record ``model`` with when none is given, the likeliest first.

    :func:`infer_input_size`'s reading first, then the same size with the channel count of timm's
    pretrained config, then with 3 channels (duplicates dropped). The stem conv's ``in_channels`` is
    not the input's when a layer before it changes the channel count. Worked example: timm's TResNet
    starts with a space-to-depth (3 -> 48 channels) before ``body.conv1.conv``, the config's
    ``first_conv``; reading 48 there made ``apply(timm.create_model("tresnet_m"))`` fail (found by a
    coverage re-sweep, with CSATv2, whose first conv takes 64 channels). Candidates are tried in order
    (see :func:`ghn_init.graph.trace`), so ``create_model(..., in_chans=1)`` still gets its 1 channel.

    Example:
        >>> import timm
        >>> input_size_candidates(timm.create_model("tresnet_m"))
        [(48, 224, 224), (3, 224, 224)]
    """
    first = infer_input_size(model)
    cfg = _pretrained_cfg(model).get("input_size")
    channels = [cfg[0]] if isinstance(cfg, (tuple, list)) and len(cfg) == 3 and isinstance(cfg[0], int) else []
    found = [first]
    for c in (*channels, 3):
        size = (c, *first[1:])
        if size not in found:
            found.append(size)
    return found


def _required_positional(model: nn.Module) -> int:
    """How many positional arguments ``model.forward`` requires (1 if it cannot be told)."""
    try:
        sig = inspect.signature(model.forward)
    except (TypeError, ValueError):
        return 1
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    n = sum(1 for p in sig.parameters.values() if p.kind in kinds and p.default is inspect.Parameter.empty)
    return max(n, 1)


def default_inputs(model: nn.Module, input_size: Sequence[int], batch: int = 2) -> tuple[torch.Tensor, ...]:
    """Zero batches to record ``model`` with: one per positional argument its ``forward`` requires.

    Args:
        model: the model.
        input_size: one sample's size, e.g. ``(3, 224, 224)``.
        batch: the batch size.

    Returns:
        A tuple of float32 meta tensors of shape ``(batch, *input_size)`` (two for RAFT's ``(image1, image2)``);
        :func:`prepare` makes them real zeros where a recording needs real values.
    """
    # On the meta device: recording on meta tensors needs no storage, so a huge size costs nothing there;
    # :func:`prepare` allocates real zeros only for a recording that runs a real forward.
    return tuple(torch.zeros(batch, *input_size, device="meta") for _ in range(_required_positional(model)))


def _map_tensors(obj: Any, fn: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
        return type(obj)(*(_map_tensors(o, fn) for o in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map_tensors(o, fn) for o in obj)
    if isinstance(obj, dict):
        return type(obj)((k, _map_tensors(v, fn)) for k, v in obj.items())
    return obj


def prepare(args: Sequence[Any], kwargs: dict[str, Any], device: torch.device) -> tuple[tuple, dict[str, Any]]:
    """Example inputs ready to record with: every tensor (in nested lists, tuples and dicts) on ``device``.

    On ``meta`` a tensor becomes an empty meta tensor of its shape; otherwise a copy on ``device`` (the
    caller's tensors are never written). Half-precision floats become float32, like the parameters the
    model is recorded with.

    Args:
        args: positional inputs.
        kwargs: keyword inputs.
        device: ``meta`` or the model's device.

    Returns:
        ``(args, kwargs)`` with their tensors replaced.
    """

    def convert(t: torch.Tensor) -> torch.Tensor:
        dtype = torch.float32 if t.dtype in (torch.float16, torch.bfloat16) else t.dtype
        if device.type == "meta":
            return torch.empty(t.shape, dtype=dtype, device="meta")
        if t.is_meta:  # a default input (zeros) recorded with a real forward
            return torch.zeros(t.shape, dtype=dtype, device=device)
        return t.detach().to(device=device, dtype=dtype, copy=True)

    return tuple(_map_tensors(tuple(args), convert)), _map_tensors(dict(kwargs), convert)
