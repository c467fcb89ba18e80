"""Stage 4 of the pipeline (trace -> plan -> predict -> **write**): predicted tensors into the model, all or nothing."""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from .errors import WriteError
from .planning import Slot


def _prepared(target: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``value`` in the target's dtype, device and memory layout, owning exactly its own storage."""
    value = value.detach()
    same = (
        value.dtype == target.dtype
        and value.device == target.device
        and value.stride() == target.stride()
        and value.storage_offset() == 0
        and value.untyped_storage().nbytes() == value.numel() * value.element_size()
    )
    return value if same else torch.empty_like(target).copy_(value)


def check_fits(name: str, slot: Slot, value: torch.Tensor) -> torch.Tensor:
    """The model tensor ``slot`` refers to, after checking that ``value`` has its shape.

    Raises:
        WriteError: the slot holds no tensor, or one of another shape.
    """
    target = getattr(slot.module, slot.attr)
    if not isinstance(target, torch.Tensor) or tuple(target.shape) != tuple(value.shape):
        raise WriteError(
            f"cannot write {name}: predicted shape {tuple(value.shape)}, model tensor "
            f"{tuple(target.shape) if isinstance(target, torch.Tensor) else type(target).__name__}",
            name=name,
        )
    return target


def _swap(target: torch.Tensor, data: torch.Tensor) -> None:
    target.data = data


def write_tensors(results: Sequence[Mapping[str, tuple[Slot, torch.Tensor]]]) -> None:
    """Write predictions into the models, all or nothing.

    Every value is checked and converted first; then each tensor's ``.data`` is swapped for its new
    value (the ``nn.Parameter`` objects stay, so optimizers built earlier still see them). Only
    swaps happen after the first write, and a failure among them swaps the old data back.
    """
    prepared = []
    for result in results:
        for name, (slot, value) in result.items():
            target = check_fits(name, slot, value)
            prepared.append((target, _prepared(target, value)))
    previous: list[tuple[torch.Tensor, torch.Tensor]] = []
    try:
        for target, data in prepared:
            previous.append((target, target.data))
            _swap(target, data)
    except BaseException:
        for target, data in reversed(previous):
            target.data = data
        raise
