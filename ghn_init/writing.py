"""Stage 4 of the pipeline (trace -> plan -> predict -> **write**): predicted tensors into the model, all or nothing."""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from .errors import PredictionError, WriteError
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
    target = slot.tensor
    if not isinstance(target, torch.Tensor) or tuple(target.shape) != tuple(value.shape):
        raise WriteError(
            f"cannot write {name}: predicted shape {tuple(value.shape)}, model tensor "
            f"{tuple(target.shape) if isinstance(target, torch.Tensor) else type(target).__name__}",
            name=name,
        )
    return target


def _swap(target: torch.Tensor, data: torch.Tensor) -> None:
    """Point ``target`` at ``data`` (the one operation that writes; tests inject failures here)."""
    target.data = data


def _restore(swapped: Sequence[tuple[str, torch.Tensor, torch.Tensor]]) -> list[str]:
    """Put the old data back into every swapped tensor, newest first; the names that could not be restored.

    It never stops early: a tensor that cannot be restored is reported and the others are still restored.
    """
    failed = []
    for name, target, old in reversed(swapped):
        try:
            target.data = old
        except Exception:  # noqa: BLE001 - keep restoring the others; reported by the caller
            failed.append(name)
    return failed


def write_tensors(results: Sequence[Mapping[str, tuple[Slot, torch.Tensor]]]) -> None:
    """Write predictions into the models, all or nothing.

    Every value is checked and converted to its target's dtype, device and layout first; a value that is
    finite in the GHN's dtype but not in the target's (e.g. above 65504 for float16) stops the write
    before anything changes. (Predictions are checked for finiteness in the GHN's dtype when decoded, so
    only casts that can overflow, to a float type with a smaller range, are checked again here.) Then
    each tensor's ``.data`` is swapped for its new value (the
    ``nn.Parameter`` objects stay, so optimizers built earlier still see them). If a swap fails, exactly
    the tensors swapped before it get their old data back (the failed one was never changed).

    Args:
        results: per model, {tensor name: (slot, predicted value)}.

    Raises:
        WriteError: a value does not fit its target (another shape, or a target on the meta device), or a swap
            failed (``.name``); nothing was written.
        PredictionError: values are not finite in their target's dtype (``.names``); nothing was written.
    """
    prepared: list[tuple[str, torch.Tensor, torch.Tensor]] = []
    not_finite: list[str] = []
    for result in results:
        for name, (slot, value) in result.items():
            target = check_fits(name, slot, value)
            if target.is_meta:  # a copy into a meta tensor writes nothing: never report it as written
                raise WriteError(
                    f"cannot write {name}: the model tensor is on the meta device (no storage); materialize the "
                    "model first, e.g. model.to_empty(device='cpu'); nothing was written",
                    name=name,
                )
            try:
                data = _prepared(target, value)
            except (RuntimeError, TypeError) as e:
                raise WriteError(
                    f"cannot convert the prediction for {name} to {target.dtype} on {target.device}: {e}", name=name
                ) from e
            prepared.append((name, target, data))
            finite = data if data.element_size() > 1 else data.float()  # torch has no isfinite for float8
            if _may_overflow(value.dtype, data.dtype) and not bool(torch.isfinite(finite).all()):
                not_finite.append(name)
    if not_finite:
        dtypes = sorted({str(t.dtype).replace("torch.", "") for n, t, _ in prepared if n in set(not_finite)})
        shown = ", ".join(not_finite[:5]) + (f", ... (+{len(not_finite) - 5})" if len(not_finite) > 5 else "")
        raise PredictionError(
            f"{len(not_finite)} predicted tensor(s) are not finite in the model's dtype ({', '.join(dtypes)}): "
            f"{shown}; nothing was written. The values overflow that dtype: initialize the model in float32 "
            "and cast it afterwards",
            names=not_finite,
        )
    swapped: list[tuple[str, torch.Tensor, torch.Tensor]] = []
    for name, target, data in prepared:
        old = target.data
        try:
            _swap(target, data)
        except BaseException as e:
            if _changed(target, old):  # the failed swap took effect before raising: undo it too, last
                swapped.append((name, target, old))
            failed = _restore(swapped)
            if not isinstance(e, Exception):  # KeyboardInterrupt mid-write: undone, let it through
                raise
            if failed:
                raise WriteError(
                    f"writing {name} failed ({type(e).__name__}: {e}) and {len(failed)} tensor(s) could not be "
                    f"restored: {', '.join(failed[:5])}; the model is partly written",
                    name=name,
                ) from e
            raise WriteError(
                f"writing {name} failed ({type(e).__name__}: {e}); the model was left as it was", name=name
            ) from e
        swapped.append((name, target, old))


def _may_overflow(source: torch.dtype, target: torch.dtype) -> bool:
    """Whether finite ``source`` values can become inf in ``target`` (decode already checked ``source``)."""
    if not target.is_floating_point:
        return False
    if not source.is_floating_point:
        return True
    return torch.finfo(target).max < torch.finfo(source).max


def _changed(target: torch.Tensor, old: torch.Tensor) -> bool:
    return target.data_ptr() != old.data_ptr() or target.dtype != old.dtype or target.shape != old.shape
