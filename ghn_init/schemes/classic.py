"""Data-free random init schemes: ``default``, ``orthogonal`` (Saxe et al. 2014) and the fan-in/fan-out variants.

All of them initialize the same tensors: every weight matrix but the classifier (:func:`~.base.matrix_weights`),
the tensors the ``orth`` post-processing of GHN predictions touches, so ``orthogonal`` vs ``ghn:SOURCE+orth``
shows what the GHN's predictions add. Biases, norm layers, embeddings and the classifier keep the model's init.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
import torch.nn as nn

from .base import SchemeReport, matrix_weights

__all__ = [
    "default",
    "orthogonal",
    "orthogonal_keepnorm",
    "kaiming_normal_fan_in",
    "kaiming_normal_fan_out",
    "xavier_uniform",
    "xavier_normal",
]


def default(model: nn.Module, *, data: Any = None, generator: Optional[torch.Generator] = None) -> SchemeReport:
    """Keep the model's own initialization (PyTorch's layer defaults, or the library's ``init_weights``).

    The reference every other scheme is compared with: touches nothing.

    Example:
        >>> ghn_init.get_scheme("default")(model).touched  # doctest: +SKIP
        []
    """
    return SchemeReport("default", type(model).__name__)


def _each_matrix(model: nn.Module, name: str, init, details: Optional[str] = None) -> SchemeReport:
    report = SchemeReport(name, type(model).__name__)
    with torch.no_grad():
        for n, p in matrix_weights(model):
            init(p)
            report.touched.append(n)
    if details:
        report.notes.append(details)
    return report


def orthogonal(model: nn.Module, *, data: Any = None, generator: Optional[torch.Generator] = None) -> SchemeReport:
    """Random orthogonal init of every weight matrix (Saxe, McClelland & Ganguli, ICLR 2014).

    Each weight, flattened to ``(out, in * k * k)``, is drawn uniformly from the (semi-)orthogonal matrices:
    ``W W^T = I`` (more inputs than outputs) or ``W^T W = I`` (``torch.nn.init.orthogonal_``, gain 1), so every
    singular value is 1 and a deep linear stack keeps the norm of its input ("dynamical isometry").

    Args:
        model: initialized in place (every matrix but the classifier, see the module docstring).
        data: not used.
        generator: CPU ``torch.Generator`` for the draws (default: the global RNG).

    Returns:
        :class:`SchemeReport` listing the matrices.

    Example:
        >>> ghn_init.get_scheme("orthogonal")(torchvision.models.resnet18())  # doctest: +SKIP
    """
    return _each_matrix(model, "orthogonal", lambda p: nn.init.orthogonal_(p, generator=generator))


def orthogonal_keepnorm(
    model: nn.Module, *, data: Any = None, generator: Optional[torch.Generator] = None
) -> SchemeReport:
    """:func:`orthogonal`, each matrix then scaled back to the Frobenius norm it had (the model's own init).

    The baseline for GHN post-processing with ``keepnorm``: random orthogonal directions at the model's scale,
    ``W <- Q ||W_0||_F / ||Q||_F``.

    Example:
        >>> ghn_init.get_scheme("orthogonal+keepnorm")(model)  # doctest: +SKIP
    """

    def init(p: torch.Tensor) -> None:
        norm = p.norm()
        nn.init.orthogonal_(p, generator=generator)
        if norm > 0:
            p.mul_(norm / p.norm())

    return _each_matrix(model, "orthogonal+keepnorm", init)


def kaiming_normal_fan_in(
    model: nn.Module, *, data: Any = None, generator: Optional[torch.Generator] = None
) -> SchemeReport:
    """He et al. (ICCV 2015) normal init for ReLU networks, fan-in mode: ``W ~ N(0, 2 / fan_in)``.

    Keeps the variance of the forward activations through ReLU layers (``fan_in = in_channels * k * k``).
    ``torch.nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="relu")`` on every matrix but the classifier.

    Example:
        >>> ghn_init.get_scheme("kaiming-normal-fan-in")(model)  # doctest: +SKIP
    """
    return _each_matrix(
        model,
        "kaiming-normal-fan-in",
        lambda p: nn.init.kaiming_normal_(p, mode="fan_in", nonlinearity="relu", generator=generator),
    )


def kaiming_normal_fan_out(
    model: nn.Module, *, data: Any = None, generator: Optional[torch.Generator] = None
) -> SchemeReport:
    """He et al. (ICCV 2015) normal init, fan-out mode: ``W ~ N(0, 2 / fan_out)`` (``fan_out = out_channels * k * k``).

    Keeps the variance of the backward gradients; torchvision's ResNets use it for their convolutions.

    Example:
        >>> ghn_init.get_scheme("kaiming-normal-fan-out")(model)  # doctest: +SKIP
    """
    return _each_matrix(
        model,
        "kaiming-normal-fan-out",
        lambda p: nn.init.kaiming_normal_(p, mode="fan_out", nonlinearity="relu", generator=generator),
    )


def xavier_uniform(model: nn.Module, *, data: Any = None, generator: Optional[torch.Generator] = None) -> SchemeReport:
    """Glorot & Bengio (AISTATS 2010) uniform init: ``W ~ U(-a, a)``, ``a = sqrt(6 / (fan_in + fan_out))``.

    The variance ``2 / (fan_in + fan_out)`` compromises between the forward and the backward pass of a linear
    (or tanh) network; the default of Hugging Face and timm's ViTs for linear layers.

    Example:
        >>> ghn_init.get_scheme("xavier-uniform")(model)  # doctest: +SKIP
    """
    return _each_matrix(model, "xavier-uniform", lambda p: nn.init.xavier_uniform_(p, generator=generator))


def xavier_normal(model: nn.Module, *, data: Any = None, generator: Optional[torch.Generator] = None) -> SchemeReport:
    """Glorot & Bengio (AISTATS 2010) normal init: ``W ~ N(0, 2 / (fan_in + fan_out))``.

    Example:
        >>> ghn_init.get_scheme("xavier-normal")(model)  # doctest: +SKIP
    """
    return _each_matrix(model, "xavier-normal", lambda p: nn.init.xavier_normal_(p, generator=generator))


def expected_std(kind: str, weight: torch.Tensor) -> float:
    """The standard deviation a fan-based scheme draws ``weight`` with (for tests and docs)."""
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(weight)
    return {
        "kaiming-normal-fan-in": math.sqrt(2.0 / fan_in),
        "kaiming-normal-fan-out": math.sqrt(2.0 / fan_out),
        "xavier-uniform": math.sqrt(2.0 / (fan_in + fan_out)),
        "xavier-normal": math.sqrt(2.0 / (fan_in + fan_out)),
    }[kind]
