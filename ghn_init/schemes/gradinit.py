"""``gradinit``: learn one scale per parameter tensor so that the first SGD step helps most (Zhu et al. 2021)."""

from __future__ import annotations

import contextlib
import re
from typing import Any, Iterator, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import InvalidArgumentError, UnsupportedModelError
from .base import SchemeReport, input_batch

__all__ = ["gradinit", "lookahead_loss"]


@contextlib.contextmanager
def _as_training_without_dropout(model: nn.Module) -> Iterator[None]:
    """BatchNorm on batch statistics, no dropout; buffers, train/eval flags and the global RNG left as they were."""
    modes = {m: m.training for m in model.modules()}
    buffers = {k: b.clone() for k, b in model.named_buffers()}
    try:
        model.eval()
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._NormBase):
                m.train()
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        with torch.no_grad():
            for k, b in model.named_buffers():
                b.copy_(buffers[k])
        for m, mode in modes.items():
            m.training = mode


def lookahead_loss(
    model: nn.Module,
    params: dict[str, torch.Tensor],
    first: tuple[torch.Tensor, torch.Tensor],
    second: tuple[torch.Tensor, torch.Tensor],
    lr: float,
    create_graph: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(L(second; theta - lr * g), ||g||_2)`` with ``g`` the gradient of ``L(first; theta)`` at ``params``: the loss
    after one plain SGD step, GradInit's objective (cross-entropy on logits)."""
    from torch.func import functional_call

    params = {n: p if p.requires_grad else p.detach().requires_grad_() for n, p in params.items()}
    loss = F.cross_entropy(functional_call(model, params, (first[0],)), first[1])
    grads = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph)
    norm = torch.sqrt(sum((g.float() ** 2).sum() for g in grads))
    stepped = {n: p - lr * g for (n, p), g in zip(params.items(), grads, strict=True)}
    return F.cross_entropy(functional_call(model, stepped, (second[0],)), second[1]), norm


def _missing_second_derivative(error: BaseException) -> Optional[str]:
    """The op named by torch's "derivative for aten::OP is not implemented" (no double backward), else None.

    Example:
        >>> _missing_second_derivative(RuntimeError("derivative for aten::hardsigmoid_backward is not implemented"))
        'hardsigmoid_backward'
    """
    found = re.search(r"derivative for (?:aten::)?([\w.]+) is not implemented", str(error))
    return found.group(1) if found else None


def gradinit(
    model: nn.Module,
    *,
    data: Any = None,
    generator: Optional[torch.Generator] = None,
    iterations: int = 50,
    lr: float = 0.1,
    scale_lr: float = 0.01,
    max_grad_norm: float = 1.0,
    min_scale: float = 0.01,
    batch_size: int = 64,
) -> SchemeReport:
    """GradInit (Zhu, Ni, Xu, Kong, Huang & Goldstein, "GradInit: Learning to Initialize Neural Networks for Stable
    and Efficient Training", NeurIPS 2021): every trainable tensor ``theta_i`` is rescaled by a learned scalar
    ``m_i``, chosen so that one SGD step from the rescaled init lowers the loss most.

    With ``theta_m = (m_i theta_i)_i`` and two halves ``S1, S2`` of a batch, each iteration takes
    ``g = grad L(S1; theta_m)`` and, by Adam (lr ``scale_lr``) on ``m``:

    - if ``||g||_2 > max_grad_norm``: minimizes ``||g||_2`` (the first step must not be too large);
    - else: minimizes ``L(S2; theta_m - lr g)``, the loss after the step (through ``g``: second order);

    then clamps ``m_i >= min_scale``. The directions of the model's own init are kept; only the per-tensor scales
    change. The SGD variant of the paper (the harness fine-tunes with SGD), with ``iterations`` steps instead of an
    epoch.

    Args:
        model: initialized in place; its output must be ``(batch, classes)`` logits.
        data: required, with labels: an ``(inputs, labels)`` pair or a ``DataLoader`` of them.
        generator: CPU ``torch.Generator`` for the batches drawn from ``data`` (default: the global RNG).
        iterations: updates of the scales. lr: the SGD step the objective looks ahead with.
        scale_lr: Adam's learning rate for the scales. max_grad_norm: the gradient-norm bound ``gamma``.
        min_scale: the lower bound of every scale. batch_size: images per half batch.

    Returns:
        :class:`SchemeReport`: every tensor and its scale.

    Raises:
        InvalidArgumentError: no data, or data without labels.
        UnsupportedModelError: the model's output is not logits for the labels.

    Example:
        >>> report = ghn_init.get_scheme("gradinit")(model, data=(images, labels))  # doctest: +SKIP
    """
    if data is None:
        raise InvalidArgumentError(
            "gradinit is data-dependent: pass data=(inputs, labels) or a DataLoader", argument="data"
        )
    x, y = input_batch(data, 4096)
    if y is None:
        raise InvalidArgumentError("gradinit needs labelled data: pass data=(inputs, labels)", argument="data")
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    x, y = x.to(device), y.to(device).long()
    base = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    scales = {n: torch.ones((), device=device, requires_grad=True) for n in base}
    optimizer = torch.optim.Adam(scales.values(), lr=scale_lr)
    report = SchemeReport("gradinit", type(model).__name__)
    with _as_training_without_dropout(model):
        with torch.no_grad():
            out = model(x[:2])
        if not isinstance(out, torch.Tensor) or out.dim() != 2 or int(y.max()) >= out.shape[1]:
            raise UnsupportedModelError(
                f"gradinit: {type(model).__name__}'s output is not (batch, classes) logits for these labels",
                scheme="gradinit",
                model=type(model).__name__,
            )
        half = min(batch_size, max(1, len(x) // 2))
        for _ in range(iterations):
            order = torch.randperm(len(x), generator=generator)[: 2 * half].to(device)
            first, second = (x[order[:half]], y[order[:half]]), (x[order[half:]], y[order[half:]])
            if len(second[0]) == 0:
                second = first
            params = {n: scales[n] * p for n, p in base.items()}
            optimizer.zero_grad()
            try:
                after, norm = lookahead_loss(model, params, first, second, lr, create_graph=True)
                objective = norm if norm.item() > max_grad_norm else after
                objective.backward()
            except (RuntimeError, NotImplementedError) as e:
                missing = _missing_second_derivative(e)
                if missing is None:
                    raise
                raise UnsupportedModelError(
                    f"gradinit differentiates through an SGD step, which needs second derivatives, and torch has none "
                    f"for {missing} (used by {type(model).__name__}); use another scheme",
                    scheme="gradinit",
                    model=type(model).__name__,
                ) from None
            optimizer.step()
            with torch.no_grad():
                for s in scales.values():
                    s.clamp_(min=min_scale)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in scales:
                p.mul_(scales[n].to(p.dtype))
                report.touched.append(n)
                report.details[n] = f"x{scales[n].item():.3g}"
    return report
