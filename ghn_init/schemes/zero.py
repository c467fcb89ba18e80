"""``zero``: ZerO, deterministic init with zeros, identities and Hadamard matrices (Zhao et al. 2022)."""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch
import torch.nn as nn

from ..errors import UnsupportedModelError
from .base import SchemeReport, matrix_weights

__all__ = ["zero", "hadamard", "zero_matrix"]


def hadamard(m: int) -> torch.Tensor:
    """The ``2^m x 2^m`` Sylvester Hadamard matrix (entries ±1, ``H H^T = 2^m I``)."""
    h = torch.ones(1, 1)
    for _ in range(m):
        h = torch.cat((torch.cat((h, h), 1), torch.cat((h, -h), 1)), 0)
    return h


def zero_matrix(rows: int, cols: int) -> torch.Tensor:
    """ZerO's ``(rows, cols)`` matrix (Algorithm 1): ``I`` if square, the partial identity ``I*`` (ones on the
    diagonal) if ``rows < cols``, and ``c I* H_m I*`` with ``m = ceil(log2 rows)``, ``c = 2^{-(m-1)/2}`` if
    ``rows > cols``: the Hadamard transform spreads the ``cols`` inputs over all ``rows`` outputs."""
    if rows <= cols:
        return torch.eye(rows, cols)
    m = math.ceil(math.log2(rows))
    return 2 ** (-(m - 1) / 2) * hadamard(m)[:rows, :cols]


def zero(
    model: nn.Module,
    *,
    data: Any = None,
    generator: Optional[torch.Generator] = None,
    input_size: Optional[Sequence[int]] = None,
) -> SchemeReport:
    """ZerO init (Zhao, Schäfer & Anandkumar, "ZerO Initialization: Initializing Neural Networks with only Zeros
    and Ones", TMLR 2022): no random numbers at all.

    Every conv/linear weight ``W`` of shape ``(P, Q[, k, k])`` becomes :func:`zero_matrix` ``(P, Q)`` (for a conv:
    at the kernel's centre, zeros elsewhere, a "dirac" per channel): the identity where ``P = Q``, a partial
    identity where the layer shrinks, ``c I* H I*`` (Hadamard) where it grows. Then, as the paper does for ResNets,
    the last gain of every residual branch is zeroed (:func:`~ghn_init.schemes.zero_residual.zero_residual`), so
    each block starts as the identity. The classifier gets the same rule (a partial identity). Biases, norm layers
    and embeddings keep the model's init.

    Args:
        model: a convolutional or MLP model: every weight matrix must belong to an ``nn.Linear`` or ``nn.Conv2d``
            (grouped convs included: each group's ``(P/g, Q/g)`` block), and no self-attention.
        data: optional inputs (their size records the model for the residual branches).
        generator: not used (nothing is drawn).
        input_size: ``(C, H, W)`` to record the model with.

    Returns:
        :class:`SchemeReport`.

    Raises:
        UnsupportedModelError: the model has self-attention or weight matrices outside Linear/Conv2d
            layers: the paper defines ZerO for CNNs and MLPs.

    Example:
        >>> ghn_init.get_scheme("zero")(torchvision.models.resnet18()).touched[0]  # doctest: +SKIP
        'conv1.weight'
    """
    from .mimetic import attention_layers
    from .zero_residual import zero_residual

    layers = {f"{n}.weight": m for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    other = [n for n, _ in matrix_weights(model, classifier=True) if n not in layers]
    with torch.no_grad():
        attention = [a.name for a in attention_layers(model)]
    if other or attention or any(isinstance(m, nn.MultiheadAttention) for m in model.modules()):
        raise UnsupportedModelError(
            f"zero (ZerO) is defined for CNNs and MLPs; {type(model).__name__} has weights outside Linear/Conv2d "
            f"layers or attention (e.g. {(other or attention or ['attention'])[0]}); use another scheme",
            scheme="zero",
            model=type(model).__name__,
        )
    report = SchemeReport("zero", type(model).__name__)
    with torch.no_grad():
        for name, m in layers.items():
            w = m.weight
            if not w.requires_grad:
                continue
            groups = getattr(m, "groups", 1)
            out_g, in_g = w.shape[0] // groups, w.shape[1]
            block = zero_matrix(out_g, in_g).to(w.dtype)
            value = torch.zeros_like(w)
            centre = tuple(s // 2 for s in w.shape[2:])
            for g in range(groups):
                value[(slice(g * out_g, (g + 1) * out_g), slice(None)) + centre] = block
            w.copy_(value)
            report.touched.append(name)
    try:
        residual = zero_residual(model, data=data, input_size=input_size)
    except UnsupportedModelError:
        report.notes.append("no residual branch to zero")
    else:
        report.touched += [n for n in residual.touched if n not in report.touched]
        report.details["residual branches zeroed"] = ", ".join(residual.touched)
    return report
