"""Per-device, eval-mode copies of a GHN, so that running one never moves or mode-switches the original.

A loaded GHN is shared by every caller in the process (``load_ghn`` caches it). Moving it with
``.to(device)`` or switching it with ``.eval()`` would change it for every other caller, in every
thread; one apply on a meta-device model would leave it without weights. Instead, whoever needs the GHN
on a device asks :func:`inference_copy`, which returns a separate module in eval mode on that device:

- on the GHN's own device the copy shares the original's tensors (no memory is copied);
- on another device it holds its own copy of the weights, built on first use and cached;
- a cached copy is rebuilt when the original's tensors change (in-place updates by an optimizer,
  ``.data`` swaps, ``load_state_dict``), so it is never stale.

The cache holds the originals weakly: a GHN that is no longer referenced frees its copies too, and
:func:`discard_copies` frees them at once (``load_ghn`` does when it replaces a GHN whose file changed).
"""

from __future__ import annotations

import threading
import weakref
from typing import Union

import torch

from ..errors import InvalidArgumentError, InvalidArgumentTypeError
from ..log import logger
from ..networks import GHN, GHNConfig

_LOCK = threading.Lock()
# original GHN -> {device: (fingerprint of the original's tensors, copy)}
_COPIES: weakref.WeakKeyDictionary[GHN, dict[torch.device, tuple[tuple, GHN]]] = weakref.WeakKeyDictionary()


def _fingerprint(ghn: GHN) -> tuple:
    """Changes whenever a tensor of ``ghn`` is replaced, moved or modified in place."""
    return tuple(
        (name, t.device, t.dtype, t.data_ptr() if t.device.type != "meta" else id(t), _version(t))
        for name, t in ghn.state_dict(keep_vars=True).items()
    )


def _version(t: torch.Tensor) -> int:
    """``t._version``; -1 for inference tensors (a GHN loaded under ``torch.inference_mode()``), which have none."""
    return -1 if t.is_inference() else t._version


def _build(ghn: GHN, device: torch.device) -> GHN:
    config = GHNConfig.from_dict(ghn.config.to_dict())
    with torch.device("meta"):  # no random init of weights that are replaced right away
        copy = GHN(config)
    # .to() is a no-op on the same device: the copy then shares the original's storage
    state = {k: v.detach().to(device) for k, v in ghn.state_dict().items()}
    copy.load_state_dict(state, strict=True, assign=True)
    for p in copy.parameters():
        p.requires_grad_(False)
    return copy.eval()


def parse_device(device: Union[str, torch.device]) -> torch.device:
    """``device`` as a ``torch.device`` that this machine has, or an :class:`InvalidArgumentError` saying why not.

    Example:
        >>> parse_device("cpu")
        device(type='cpu')
    """
    if isinstance(device, bool) or not isinstance(device, (str, int, torch.device)):
        raise InvalidArgumentTypeError(
            f"device must be a torch device such as 'cpu' or 'cuda:0', got {type(device).__name__}",
            argument="device",
            value=device,
        )
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
        reason = (str(e).splitlines() or [""])[0]
        raise InvalidArgumentError(
            f"device={device!r} is not a torch device ({reason}); pass e.g. 'cpu' or 'cuda:0'",
            argument="device",
            value=device,
        ) from None
    backend = getattr(torch, parsed.type, None)
    is_available = getattr(backend, "is_available", None)
    if parsed.type not in ("cpu", "meta") and callable(is_available) and not is_available():
        raise InvalidArgumentError(
            f"device={device!r}: this machine (or this torch build) has no {parsed.type} device; pass 'cpu'",
            argument="device",
            value=device,
        )
    if parsed.type == "cuda":
        index = torch.cuda.current_device() if parsed.index is None else parsed.index
        if index >= torch.cuda.device_count():
            raise InvalidArgumentError(
                f"device={device!r}: there are only {torch.cuda.device_count()} CUDA devices; pass one of "
                f"cuda:0..cuda:{torch.cuda.device_count() - 1}",
                argument="device",
                value=device,
            )
        parsed = torch.device("cuda", index)
    return parsed


def inference_copy(ghn: GHN, device: Union[str, torch.device, None] = None) -> GHN:
    """A GHN equal to ``ghn``, in eval mode on ``device``, that may be used without touching ``ghn``.

    Thread-safe. The copy is shared by all callers asking for the same device: treat it as read-only.

    Args:
        ghn: the original, on any device, in any mode; it is never moved, switched or modified.
        device: where the copy's weights live (default: the original's device).

    Returns:
        A :class:`GHN` in eval mode whose parameters do not require gradients; on the original's device
        it shares the original's tensors, elsewhere it owns a copy of them.

    Example:
        >>> import ghn_init
        >>> from ghn_init.hub.copies import inference_copy
        >>> ghn = ghn_init.GHN(ghn_init.GHNConfig()).train()  # e.g. a GHN being trained
        >>> copy = inference_copy(ghn, "meta")
        >>> copy.training, ghn.training, next(ghn.parameters()).device.type
        (False, True, 'cpu')
    """
    own = next(iter(ghn.state_dict().values())).device
    target = own if device is None else parse_device(device)
    fingerprint = _fingerprint(ghn)
    with _LOCK:
        cached = _COPIES.get(ghn, {}).get(target)
        if cached is not None and cached[0] == fingerprint:
            return cached[1]
    if target != own:
        logger.debug("copying the GHN (%s) from %s to %s", ghn.config.extra.get("name", ghn.config.kind), own, target)
    copy = _build(ghn, target)  # outside the lock: copying a large GHN to a GPU takes a while
    with _LOCK:
        _COPIES.setdefault(ghn, {})[target] = (fingerprint, copy)
    return copy


def discard_copies(ghn: GHN) -> None:
    """Forget the cached copies of ``ghn`` on every device, freeing their memory (``ghn`` itself is untouched).

    ``load_ghn`` calls it when it replaces a GHN whose file changed on disk, so the replaced GHN's copies
    (e.g. on a GPU) go with it even while a caller still holds the replaced GHN; a later
    :func:`inference_copy` of it builds a new one.

    Example:
        >>> import ghn_init
        >>> from ghn_init.hub.copies import discard_copies, inference_copy
        >>> ghn = ghn_init.GHN(ghn_init.GHNConfig())
        >>> copy = inference_copy(ghn, "meta")
        >>> discard_copies(ghn)
        >>> inference_copy(ghn, "meta") is copy
        False
    """
    with _LOCK:
        _COPIES.pop(ghn, None)
