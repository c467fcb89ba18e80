"""What every init scheme shares: the :class:`SchemeReport` it returns, the tensors it may touch, its data."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import torch
import torch.nn as nn

from ..errors import InvalidArgumentError

__all__ = ["SchemeReport", "matrix_weights", "input_batch", "split_batch"]


@dataclass
class SchemeReport:
    """What an init scheme did to one model.

    Attributes:
        scheme: the scheme's name.
        model: the model's class name.
        touched: names of the tensors the scheme wrote, in the order it wrote them.
        details: ``{tensor or layer name: what was done}`` where there is more to say (a scale, a gain).
        notes: remarks (layers skipped and why).
    """

    scheme: str
    model: str
    touched: list[str] = field(default_factory=list)
    details: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Every field as plain JSON-serializable values."""
        return asdict(self)

    def __str__(self) -> str:
        lines = [f"{self.scheme}: {self.model}, {len(self.touched)} tensors initialized"]
        lines += [f"  {k}: {v}" for k, v in self.details.items()]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def matrix_weights(model: nn.Module, classifier: bool = False) -> list[tuple[str, torch.Tensor]]:
    """The weight matrices of ``model``: every trainable tensor whose role is
    :attr:`~ghn_init.postprocess.Role.MATRIX` (conv and linear weights, attention projections), in module order.

    The rule is the one the ``orth`` post-processing of GHN predictions uses (:func:`~ghn_init.postprocess.roles_of`):
    a ConvNeXt ``layer_scale`` ``(C, 1, 1)`` is a gain and a ViT's ``pos_embedding`` an embedding, neither a matrix.

    Args:
        model: the model.
        classifier: include the last matrix (the classifier); by default it is left out, as GHN predictions
            leave it to the model's own init under ``orth``.

    Returns:
        ``[(name, tensor)]``.
    """
    from ..planning import writable_slots
    from ..postprocess import Role, roles_of

    params = {id(p) for p in model.parameters()}
    tensors = {s.name: (s, s.tensor) for s in writable_slots(model).values()}
    roles = roles_of(tensors)
    found = [(n, t) for n, (_, t) in tensors.items() if roles[n] is Role.MATRIX and id(t) in params]
    return found if classifier else found[:-1]


def split_batch(batch: Any) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``(inputs, labels or None)`` of one batch: a tensor, an ``(x, y)`` pair or a dict with an image tensor."""
    if isinstance(batch, torch.Tensor):
        return batch, None
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        labels = batch[1] if len(batch) > 1 and isinstance(batch[1], torch.Tensor) else None
        return batch[0], labels
    if isinstance(batch, Mapping):
        for key in ("image", "images", "pixel_values", "x", "input"):
            if isinstance(batch.get(key), torch.Tensor):
                y = next((batch[k] for k in ("label", "labels", "y") if isinstance(batch.get(k), torch.Tensor)), None)
                return batch[key], y
    raise InvalidArgumentError(
        f"data: cannot find the inputs in a batch of type {type(batch).__name__}; pass a tensor, an (inputs, labels) "
        "pair, a dict with an 'image'/'pixel_values' tensor, or a DataLoader of them",
        argument="data",
        value=type(batch).__name__,
    )


def input_batch(data: Any, limit: int = 256) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """One batch of at most ``limit`` inputs (and their labels, if the data has them) from ``data``.

    Args:
        data: a tensor of inputs, an ``(inputs, labels)`` pair, or an iterable of batches (a ``DataLoader``):
            batches are concatenated until ``limit`` inputs.
        limit: the most inputs to take.

    Returns:
        ``(inputs, labels)``; ``labels`` is None when the data has none.

    Raises:
        InvalidArgumentError: no inputs could be found.
    """
    if isinstance(data, (torch.Tensor, Mapping)) or (
        isinstance(data, (tuple, list)) and data and isinstance(data[0], torch.Tensor)
    ):
        x, y = split_batch(data)
        return x[:limit], (y[:limit] if y is not None else None)
    if not isinstance(data, Iterable):
        raise InvalidArgumentError(
            f"data must be a tensor, an (inputs, labels) pair or a DataLoader, got {type(data).__name__}",
            argument="data",
            value=type(data).__name__,
        )
    xs, ys, n = [], [], 0
    for batch in data:
        x, y = split_batch(batch)
        xs.append(x)
        ys.append(y)
        n += len(x)
        if n >= limit:
            break
    if not xs:
        raise InvalidArgumentError("data holds no batch; pass a few hundred training inputs", argument="data")
    labels = torch.cat(ys)[:limit] if all(y is not None for y in ys) else None
    return torch.cat(xs)[:limit], labels
