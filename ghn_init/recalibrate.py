"""Re-estimate BatchNorm running statistics from data: a GHN predicts weights, not running statistics."""

from __future__ import annotations

from typing import Iterable, Optional, Union

import torch
import torch.nn as nn

__all__ = ["recalibrate_bn"]

Batch = Union[torch.Tensor, tuple, list, dict]


def _inputs(batch: Batch) -> torch.Tensor:
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]  # (images, labels) from a DataLoader
    if isinstance(batch, dict):
        for key in ("image", "images", "pixel_values", "x", "input"):
            if isinstance(batch.get(key), torch.Tensor):
                return batch[key]
    raise TypeError(
        f"recalibrate_bn: cannot find the inputs in a batch of type {type(batch).__name__}; pass tensors, "
        "(inputs, labels) pairs or dicts with an 'image'/'pixel_values' tensor"
    )


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module,
    data: Union[torch.Tensor, Iterable[Batch]],
    *,
    max_batches: Optional[int] = None,
    batch_size: int = 128,
) -> nn.Module:
    """Reset and re-estimate the running statistics of every BatchNorm layer of ``model``, in place.

    A GHN predicts weights and biases but no running statistics, so right after
    :func:`ghn_init.apply` a model with BatchNorm still carries the statistics of its default
    initialization (mean 0, variance 1) and its eval-mode outputs can be off by orders of
    magnitude. Call this after ``apply`` and before evaluating in eval mode (or exporting, or
    freezing BatchNorm), and again before testing a model fine-tuned for few steps (running
    averages with a small momentum lag behind the weights). Training in train mode does not need it.

    The statistics are a cumulative (equal-weight) average over the given batches. Only the
    BatchNorm layers run in train mode (dropout and the like stay off), nothing else changes:
    weights, each module's train/eval mode, the norm layers' momentum and the global RNG state
    are as before.

    Args:
        model: the model; runs on its own device (batches are moved there).
        data: a tensor of inputs (split into ``batch_size`` chunks) or an iterable of batches:
            tensors, ``(inputs, labels)`` pairs (e.g. a ``DataLoader``) or dicts with an
            ``"image"``/``"pixel_values"`` tensor.
        max_batches: use at most this many batches (default: all).
        batch_size: chunk size when ``data`` is a tensor.

    Returns:
        ``model``, for chaining.

    Raises:
        ValueError: ``data`` holds no batch while the model has BatchNorm layers.
        TypeError: a batch holds no recognizable input tensor.

    Example:
        >>> report = ghn_init.apply(model, "bundled")
        >>> ghn_init.recalibrate_bn(model, train_images[:512])  # doctest: +SKIP
        >>> model.eval()(test_images)  # doctest: +SKIP
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return model
    if max_batches is not None and max_batches < 1:
        raise ValueError(f"max_batches must be >= 1, got {max_batches}")
    batches = data.split(batch_size) if isinstance(data, torch.Tensor) else data
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    modes = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for m in norms}
    saved = {m: (m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in norms}
    seen = 0
    try:
        model.eval()
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average
            m.train()
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            for batch in batches:
                if max_batches is not None and seen >= max_batches:
                    break
                model(_inputs(batch).to(device))
                seen += 1
        if seen == 0:
            raise ValueError("recalibrate_bn: data holds no batch; pass a few hundred training inputs")
    except BaseException:
        for m, (mean, var, count) in saved.items():
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.num_batches_tracked.copy_(count)
        raise
    finally:
        for m, momentum in momenta.items():
            m.momentum = momentum
        for m, mode in modes.items():
            m.training = mode
    return model
