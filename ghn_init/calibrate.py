"""Data-aware GHN init: calibrate written predictions on a batch of the user's data (``apply(model, ghn, data=)``).

A GHN predicts every layer's weights from the graph alone: their scale is what the GHN learned on its training
architectures and images, and it predicts no BatchNorm statistics. Given a batch of the user's inputs (and labels),
:func:`calibrate` fixes the three scales that data determines, without changing any weight's direction:

1. each predicted conv/linear layer's output scale, LSUV-style (Mishkin & Matas 2016) in one forward pass: in
   call order, the layer's weight and bias are multiplied by ``1 / std(output)`` and its output with them, so
   later layers see the corrected input and every layer's output variance on the batch ends at 1;
2. the classifier's logit scale: with labels, the factor ``s`` on its weight and bias that minimizes the
   cross-entropy of ``s * logits`` on the batch (temperature scaling, by golden-section search);
3. BatchNorm running statistics, re-estimated on the batch (:func:`ghn_init.recalibrate_bn`).

``Report.calibration`` lists each change.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .recalibrate import recalibrate_bn
from .schemes.base import input_batch
from .schemes.lsuv import LAYERS, layer_outputs, measuring

__all__ = ["calibrate", "calibrated_write", "fit_logit_scale"]

LOG_SCALE_RANGE = (-6.0, 3.0)  # the logit scale is searched in [e^-6, e^3]


def fit_logit_scale(logits: torch.Tensor, labels: torch.Tensor, iters: int = 60) -> float:
    """The ``s > 0`` that minimizes ``cross_entropy(s * logits, labels)`` (convex in ``s``; golden-section search
    on ``log s`` over :data:`LOG_SCALE_RANGE`)."""
    logits, labels = logits.detach().float(), labels.long()

    def loss(log_s: float) -> float:
        return F.cross_entropy(logits * math.exp(log_s), labels).item()

    lo, hi = LOG_SCALE_RANGE
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = loss(a), loss(b)
    for _ in range(iters):
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = loss(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = loss(b)
    return math.exp((lo + hi) / 2)


def _scale_layer(module: nn.Module, s: float) -> None:
    module.weight.mul_(s)
    if getattr(module, "bias", None) is not None:
        module.bias.mul_(s)


@torch.no_grad()
def calibrate(
    model: nn.Module,
    data: Any,
    *,
    predicted: Optional[Sequence[str]] = None,
    classifier: Optional[str] = None,
    batch_size: int = 256,
) -> dict[str, str]:
    """Calibrate ``model``'s (predicted) layers on a batch of data, in place (see the module docstring).

    Args:
        model: the model, its predictions written.
        data: a batch of inputs, an ``(inputs, labels)`` pair, or a ``DataLoader`` (the first ``batch_size``
            inputs are used); labels enable the logit-scale step.
        predicted: names of the written tensors (``Report.predicted``); only layers whose weight is among them are
            rescaled (default: every conv/linear layer).
        classifier: the classifier's weight name (default: the last linear layer called).
        batch_size: inputs used.

    Returns:
        ``{layer or "batchnorm": what changed}``.

    Raises:
        InvalidArgumentError: ``data`` holds no inputs.

    Example:
        >>> report = ghn_init.apply(model, "bundled", data=(images, labels))  # doctest: +SKIP
        >>> report.calibration["fc"]  # doctest: +SKIP
        'logit scale x0.42: cross-entropy 3.10 -> 2.21 on 256 inputs'
    """
    x, y = input_batch(data, batch_size)
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    x = x.to(device)
    names = {m: n for n, m in model.named_modules()}
    wanted = set(predicted) if predicted is not None else None
    layers = [m for m in model.modules() if isinstance(m, LAYERS)]
    changes: dict[str, str] = {}
    with measuring(model):
        order = list(layer_outputs(model, x, layers, keep=False))  # call order
        linear = [m for m in order if isinstance(m, nn.Linear)]
        head = None
        if classifier is not None:
            head = next((m for m in order if f"{names[m]}.weight" == classifier), None)
        elif linear:
            head = linear[-1]
        scaled: set[nn.Module] = set()

        def rescale(module: nn.Module, args: Any, output: Any) -> Any:
            if module in scaled or module is head or not isinstance(output, torch.Tensor):
                return None
            scaled.add(module)
            std = output.float().std().item()
            if not (std > 0 and math.isfinite(std)):
                return None
            s = 1.0 / std
            _scale_layer(module, s)
            changes[names[module]] = f"output scale x{s:.3g} (std {std:.3g} -> 1)"
            return output * s

        targets = [m for m in order if wanted is None or f"{names[m]}.weight" in wanted]
        handles = [m.register_forward_hook(rescale) for m in targets]
        try:
            logits = model(x)
        finally:
            for h in handles:
                h.remove()
        head_name = names[head] if head is not None else None
        if head is None or (wanted is not None and f"{head_name}.weight" not in wanted):
            pass
        elif y is None:
            changes[head_name] = "logit scale kept: the data has no labels"
        elif not isinstance(logits, torch.Tensor) or logits.dim() != 2 or int(y.max()) >= logits.shape[1]:
            changes[head_name] = "logit scale kept: the model's output is not (batch, classes) logits for these labels"
        else:
            y = y.to(logits.device)
            s = fit_logit_scale(logits, y)
            before = F.cross_entropy(logits.float(), y).item()
            after = F.cross_entropy(logits.float() * s, y).item()
            _scale_layer(head, s)
            changes[head_name] = f"logit scale x{s:.3g}: cross-entropy {before:.3g} -> {after:.3g} on {len(x)} inputs"
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if norms:
        recalibrate_bn(model, x, batch_size=batch_size)
        changes["batchnorm"] = f"running statistics of {len(norms)} layers re-estimated on {len(x)} inputs"
    return changes


def calibrated_write(predictions: Sequence[Any], data: Any) -> list[Any]:
    """Write ``predictions`` (:func:`ghn_init.write`) and :func:`calibrate` each model on ``data``; all or nothing:
    if calibration fails, every model is restored to what it was before the write.

    Returns:
        The reports, ``Report.calibration`` filled in.
    """
    from .api import write

    input_batch(data, 1)  # bad data fails before anything is written
    saved = [{k: v.detach().clone() for k, v in p.model.state_dict(keep_vars=True).items()} for p in predictions]
    reports = write(predictions)
    try:
        for p, report in zip(predictions, reports, strict=True):
            head = p.plan.classifier()
            report.calibration = calibrate(
                p.model, data, predicted=report.predicted, classifier=head[0] if head else None
            )
    except BaseException:
        with torch.no_grad():
            for p, state in zip(predictions, saved, strict=True):
                current = p.model.state_dict(keep_vars=True)
                for k, v in state.items():
                    current[k].copy_(v)
        raise
    return reports
