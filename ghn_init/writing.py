"""Stage 4 of the pipeline (trace -> plan -> predict -> **write**): predicted tensors into the model, all or nothing."""

from __future__ import annotations

from typing import Mapping, Optional, Sequence, Union

import torch

from .errors import PredictionError, WriteError, listed
from .planning import Slot
from .tiling import Tiled


def _owns_its_storage(t: torch.Tensor) -> bool:
    """``t`` starts its storage and fills it exactly: no view into a larger buffer."""
    return t.storage_offset() == 0 and t.untyped_storage().nbytes() == t.numel() * t.element_size()


def _prepared(target: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``value`` in the target's dtype, device and memory layout, owning exactly its own storage."""
    value = value.detach()
    same = (
        value.dtype == target.dtype
        and value.device == target.device
        and value.stride() == target.stride()
        and _owns_its_storage(value)
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


def _writable_in_place(target: torch.Tensor) -> bool:
    """Whether a :class:`Tiled` prediction is tiled straight into ``target``'s storage.

    A plain strided tensor (or ``nn.Parameter``) that owns exactly its contiguous storage, on a real
    device and not an inference tensor: writing into it is what swapping its ``.data`` for a new tensor
    would leave, without allocating that tensor. Anything else gets the tensor made and swapped in.
    """
    return (
        type(target) in (torch.Tensor, torch.nn.Parameter)
        and target.layout == torch.strided
        and not target.is_meta
        and not target.is_inference()
        and target.is_contiguous()
        and _owns_its_storage(target)
    )


def _tile_into(target: torch.Tensor, tiled: Tiled) -> None:
    """Tile ``tiled`` into ``target``'s storage (tests inject failures here)."""
    with torch.no_grad():
        tiled.write_into(target.data)


def _write_in_place(
    direct: Sequence[tuple[str, torch.Tensor, Tiled]], swapped: Sequence[tuple[str, torch.Tensor, torch.Tensor]]
) -> None:
    """Tile every prediction of ``direct`` into its target; runs after the swaps, as the last step of a write.

    Only a fault of the device itself can make a validated copy fail: then the swaps are undone and the
    error names the tensors already overwritten (their old values are gone: the model is partly written).
    A ``KeyboardInterrupt`` meanwhile lets the write finish (every copy is idempotent: the interrupted
    one is redone) and is raised after it, so the model holds the whole prediction, never a part.
    """
    interrupted: Optional[BaseException] = None
    i = 0
    while i < len(direct):
        try:
            while i < len(direct):
                _tile_into(direct[i][1], direct[i][2])
                i += 1
        except Exception as e:
            name = direct[i][0]
            written = [n for n, _, _ in direct[:i]]
            not_restored = _restore(swapped)
            shown = listed(written, 5)
            raise WriteError(
                f"writing {name} failed ({type(e).__name__}: {e}) after {len(written)} tensor(s) were written "
                f"in place{': ' + shown if written else ''}; the model is partly written"
                + (f" ({len(not_restored)} swapped tensor(s) could not be restored either)" if not_restored else ""),
                name=name,
            ) from e
        except BaseException as e:  # noqa: BLE001 - KeyboardInterrupt & co.: finish the write, then raise it
            interrupted = e
    if interrupted is not None:
        raise interrupted


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


def write_tensors(results: Sequence[Mapping[str, tuple[Slot, Union[torch.Tensor, Tiled]]]]) -> None:
    """Write predictions into the models, all or nothing.

    Every value is checked and converted to its target's dtype, device and layout first; a value that is
    finite in the GHN's dtype but not in the target's (e.g. above 65504 for float16) stops the write
    before anything changes. (Predictions are checked for finiteness in the GHN's dtype when decoded, so
    only casts that can overflow, to a float type with a smaller range, are checked again here.) Then
    each tensor's ``.data`` is swapped for its new value (the
    ``nn.Parameter`` objects stay, so optimizers built earlier still see them). If a swap fails, exactly
    the tensors swapped before it get their old data back (the failed one was never changed).

    A :class:`~ghn_init.tiling.Tiled` value (``apply``'s large tiled predictions) is converted as a block
    and checked like the others, and, where the target is a plain tensor owning its contiguous storage
    (:func:`_writable_in_place`), tiled straight into that storage after every swap succeeded
    (:func:`_write_in_place`: such a copy cannot fail short of a device fault, and an interrupt finishes
    the write before it is raised); into any other target it is made and swapped like a tensor.

    Args:
        results: per model, {tensor name: (slot, predicted value)}.

    Raises:
        WriteError: a value does not fit its target (another shape, or a target on the meta device), or a swap
            failed (``.name``); nothing was written.
        PredictionError: values are not finite in their target's dtype (``.names``); nothing was written.
    """
    prepared: list[tuple[str, torch.Tensor, torch.Tensor]] = []
    direct: list[tuple[str, torch.Tensor, Tiled]] = []
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
            in_place = isinstance(value, Tiled) and _writable_in_place(target)
            if isinstance(value, Tiled) and not in_place:
                value = value.materialize()
            try:
                if in_place:
                    block = value.block.detach().to(dtype=target.dtype, device=target.device)
                    direct.append((name, target, Tiled(block, value.shape)))
                    data = block  # every value of the tiled tensor is one of the block's
                else:
                    data = _prepared(target, value)
                    prepared.append((name, target, data))
            except (RuntimeError, TypeError) as e:
                raise WriteError(
                    f"cannot convert the prediction for {name} to {target.dtype} on {target.device}: {e}", name=name
                ) from e
            finite = data if data.element_size() > 1 else data.float()  # torch has no isfinite for float8
            if _may_overflow(value.dtype, data.dtype) and not bool(torch.isfinite(finite).all()):
                not_finite.append(name)
    if not_finite:
        overflowing = set(not_finite)
        dtypes = sorted({str(t.dtype).replace("torch.", "") for n, t, _ in (*prepared, *direct) if n in overflowing})
        shown = listed(not_finite, 5)
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
    _write_in_place(direct, swapped)


def _may_overflow(source: torch.dtype, target: torch.dtype) -> bool:
    """Whether finite ``source`` values can become inf in ``target`` (decode already checked ``source``)."""
    if not target.is_floating_point:
        return False
    if not source.is_floating_point:
        return True
    return torch.finfo(target).max < torch.finfo(source).max


def _changed(target: torch.Tensor, old: torch.Tensor) -> bool:
    return target.data_ptr() != old.data_ptr() or target.dtype != old.dtype or target.shape != old.shape
