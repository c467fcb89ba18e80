"""``lsuv``: layer-sequential unit-variance init (Mishkin & Matas, "All you need is a good init", ICLR 2016)."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional

import torch
import torch.nn as nn

from ..errors import InvalidArgumentError
from .base import SchemeReport, input_batch

__all__ = ["lsuv", "layer_outputs", "measuring"]

LAYERS = (nn.modules.conv._ConvNd, nn.Linear)


class _Stop(Exception):
    """Raised by a hook once the layer of interest has run: the rest of the forward pass is not needed."""


@contextlib.contextmanager
def measuring(model: nn.Module) -> Iterator[None]:
    """Run ``model`` as it trains (BatchNorm on batch statistics) but without dropout, and leave every buffer
    (running statistics), train/eval flag and the global RNG as they were."""
    modes = {m: m.training for m in model.modules()}
    buffers = {k: b.clone() for k, b in model.state_dict(keep_vars=True).items() if not isinstance(b, nn.Parameter)}
    try:
        model.eval()
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._NormBase):
                m.train()
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            yield
    finally:
        state = model.state_dict(keep_vars=True)
        with torch.no_grad():
            for k, b in buffers.items():
                state[k].copy_(b)
        for m, mode in modes.items():
            m.training = mode


def layer_outputs(
    model: nn.Module, x: torch.Tensor, layers: Optional[list[nn.Module]] = None, *, keep: bool = True
) -> dict[nn.Module, Optional[torch.Tensor]]:
    """The first output of each conv/linear layer (or of ``layers``) in one forward pass, in call order.

    With ``keep=False`` the values are None: the call order alone, without holding every layer's activations.
    """
    targets = layers if layers is not None else [m for m in model.modules() if isinstance(m, LAYERS)]
    seen: dict[nn.Module, Optional[torch.Tensor]] = {}

    def hook(module: nn.Module, args: Any, output: Any) -> None:
        if module not in seen and isinstance(output, torch.Tensor):
            seen[module] = output.detach() if keep else None

    handles = [m.register_forward_hook(hook) for m in targets]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return seen


def _output_of(model: nn.Module, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's output on ``x``; the forward pass stops right after it."""
    captured: list[torch.Tensor] = []

    def hook(module: nn.Module, args: Any, output: Any) -> None:
        captured.append(output.detach())
        raise _Stop

    handle = layer.register_forward_hook(hook)
    try:
        model(x)
    except _Stop:
        pass
    finally:
        handle.remove()
    return captured[0]


def lsuv(
    model: nn.Module,
    *,
    data: Any = None,
    generator: Optional[torch.Generator] = None,
    tol: float = 0.02,
    max_iter: int = 10,
    batch_size: int = 256,
) -> SchemeReport:
    """Layer-sequential unit-variance init (Mishkin & Matas, ICLR 2016): orthogonal, then each layer's output
    variance on a batch of data brought to 1.

    1. Every conv and linear weight (the classifier too) is drawn orthogonal (Saxe et al. 2014).
    2. In forward order, each layer ``l`` runs on the batch and its weight is divided by the standard deviation of
       its output, ``W_l <- W_l / sqrt(Var[y_l])``, until ``|Var[y_l] - 1| < tol`` (at most ``max_iter`` times).

    Later layers see the rescaled outputs of earlier ones, so every layer's output variance on the batch is 1
    when it ends. The forward passes run as training does (BatchNorm on batch statistics, no dropout); running
    statistics, train/eval flags and the global RNG are left as they were. Layers the forward pass does not call
    as modules (``nn.MultiheadAttention``'s projections) keep their orthogonal init (``notes`` names them).

    Args:
        model: initialized in place; runs on its own device.
        data: required: a batch of inputs, an ``(inputs, labels)`` pair or a ``DataLoader`` (the first
            ``batch_size`` inputs are used).
        generator: CPU ``torch.Generator`` for the orthogonal draws (default: the global RNG).
        tol: tolerance on the output variance.
        max_iter: rescalings per layer at most.
        batch_size: inputs used.

    Returns:
        :class:`SchemeReport`: the weights, and per layer the variance it ended with.

    Raises:
        InvalidArgumentError: no ``data``.

    Example:
        >>> report = ghn_init.get_scheme("lsuv")(model, data=train_images[:256])  # doctest: +SKIP
    """
    if data is None:
        raise InvalidArgumentError(
            "lsuv is data-dependent: pass data= (a batch of training inputs or a DataLoader)", argument="data"
        )
    x, _ = input_batch(data, batch_size)
    param = next(model.parameters(), None)
    x = x.to(param.device if param is not None else "cpu")
    report = SchemeReport("lsuv", type(model).__name__)
    names = {m: n for n, m in model.named_modules()}
    with measuring(model):
        order = list(layer_outputs(model, x, keep=False))  # call order
        for m in model.modules():
            if isinstance(m, LAYERS) and m.weight.requires_grad:
                nn.init.orthogonal_(m.weight, generator=generator)
        for layer in order:
            if not layer.weight.requires_grad:
                continue
            var = float("nan")
            for _ in range(max_iter):
                var = _output_of(model, layer, x).float().var().item()
                if not var > 0 or abs(var - 1.0) < tol:
                    break
                layer.weight.div_(var**0.5)
            else:
                var = _output_of(model, layer, x).float().var().item()
            report.touched.append(f"{names[layer]}.weight")
            report.details[names[layer]] = f"output variance {var:.3f}"
        skipped = [n for m, n in names.items() if isinstance(m, LAYERS) and m not in order and m.weight.requires_grad]
        if skipped:
            report.touched += [f"{n}.weight" for n in skipped]
            report.notes.append(
                f"{len(skipped)} layers are not called as modules in the forward pass (e.g. {skipped[0]}): "
                "orthogonal, not rescaled"
            )
    return report
