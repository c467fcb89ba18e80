"""One walk over a model's modules, shared by the stages of one prediction.

Recording, graph building, planning and the report each need the model's modules, its parameters or its
buffers. ``Module.named_modules()`` is a recursive generator: walking densenet121's 434 modules takes about
0.2 ms, and one ``apply`` used to walk them ten times. Inside :func:`shared_walks` (which ``predict`` and
``apply`` hold while they read the model, under its lock, so nothing changes its modules meanwhile) each walk
is made once per model and reused; outside it every call walks afresh, as PyTorch would.

The lists returned are shared: callers must not change them.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Iterator, Optional

import torch
import torch.nn as nn

_WALKS: contextvars.ContextVar[Optional[dict[tuple[int, Any], tuple[nn.Module, list]]]] = contextvars.ContextVar(
    "ghn_init_walks", default=None
)


@contextlib.contextmanager
def shared_walks() -> Iterator[None]:
    """Reuse each model's walk until the block ends (nested blocks share the outermost one's walks).

    Only for code that does not add, remove or replace modules inside the block (recording puts back whatever
    a forward pass changes before it returns).
    """
    if _WALKS.get() is not None:
        yield
        return
    token = _WALKS.set({})
    try:
        yield
    finally:
        _WALKS.reset(token)


def named_modules(model: nn.Module, remove_duplicate: bool = True) -> list[tuple[str, nn.Module]]:
    """``list(model.named_modules(remove_duplicate=remove_duplicate))``, walked once per :func:`shared_walks` block.

    Example:
        >>> [name for name, _ in named_modules(nn.Sequential(nn.Linear(2, 2)))]
        ['', '0']
    """
    walks = _WALKS.get()
    if walks is None:
        return list(model.named_modules(remove_duplicate=remove_duplicate))
    key = (id(model), remove_duplicate)
    hit = walks.get(key)
    if hit is None or hit[0] is not model:
        hit = walks[key] = (model, list(model.named_modules(remove_duplicate=remove_duplicate)))
    return hit[1]


def modules(model: nn.Module) -> list[nn.Module]:
    """``list(model.modules())`` (each module once), from :func:`named_modules`; made once per :func:`shared_walks`
    block too."""
    walks = _WALKS.get()
    if walks is None:
        return list(model.modules())
    key = (id(model), "modules")
    hit = walks.get(key)
    if hit is None or hit[0] is not model:
        hit = walks[key] = (model, [m for _, m in named_modules(model)])
    return hit[1]


def named_tensors(model: nn.Module, store: str) -> list[tuple[str, torch.Tensor]]:
    """``list(model.named_parameters())`` (``store="_parameters"``) or ``list(model.named_buffers())``
    (``"_buffers"``) from :func:`named_modules`: each tensor once, under the first name it has.

    A model whose class overrides ``named_parameters``/``named_buffers`` is asked itself.
    """
    method = "named_parameters" if store == "_parameters" else "named_buffers"
    if getattr(type(model), method) is not getattr(nn.Module, method):
        return list(getattr(model, method)())
    seen: set[int] = set()
    found = []
    for prefix, m in named_modules(model):
        for name, t in (m._parameters if store == "_parameters" else m._buffers).items():
            if t is None or id(t) in seen:
                continue
            seen.add(id(t))
            found.append((f"{prefix}.{name}" if prefix else name, t))
    return found
