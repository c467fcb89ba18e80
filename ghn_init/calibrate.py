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

from .errors import GHNInitError, InvalidArgumentError
from .recalibrate import recalibrate_bn
from .schemes.base import input_batch
from .schemes.lsuv import LAYERS, layer_outputs, measuring

__all__ = ["calibrate", "calibrated_write", "check_data", "fit_logit_scale"]

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
    # A frozen norm layer (its parameters require no grad and were not predicted: a frozen pretrained backbone)
    # keeps its statistics too; they were re-estimated with the rest before.
    frozen = [m for m in norms if wanted is not None and _frozen_norm(m, names[m], wanted)]
    kept = {m: [t.clone() for t in m.buffers(recurse=False)] for m in frozen}
    if len(frozen) < len(norms):
        recalibrate_bn(model, x, batch_size=batch_size)
        for m, buffers in kept.items():
            for t, old in zip(m.buffers(recurse=False), buffers, strict=True):
                t.copy_(old)
        n = len(norms) - len(frozen)
        note = f" ({len(frozen)} frozen layers kept theirs)" if frozen else ""
        changes["batchnorm"] = f"running statistics of {n} layers re-estimated on {len(x)} inputs{note}"
    return changes


def _frozen_norm(module: nn.Module, name: str, predicted: set[str]) -> bool:
    """Whether a norm layer belongs to a frozen part of the model: it has parameters, none requires grad and none
    was predicted."""
    params = list(module.named_parameters(recurse=False))
    prefix = f"{name}." if name else ""
    return bool(params) and all(not t.requires_grad and f"{prefix}{n}" not in predicted for n, t in params)


def check_data(data: Any) -> None:
    """Refuse calibration data that would corrupt the model or fail after the write: no inputs, non-finite inputs,
    or labels that do not match the inputs.

    Raises:
        InvalidArgumentError: naming ``data``; nothing was written.
    """
    x, y = input_batch(data, 256)
    if x.dim() == 0 or len(x) == 0:
        raise InvalidArgumentError(
            f"data holds no inputs (a batch of shape {tuple(x.shape)}); pass a few hundred training inputs",
            argument="data",
            value=tuple(x.shape),
        )
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise InvalidArgumentError(
            "data has non-finite inputs (NaN or inf): calibrating on them would write NaN statistics; clean the data "
            "or pass data=None",
            argument="data",
            value="non-finite",
        )
    if y is not None and (y.dim() == 0 or len(y) != len(x)):
        raise InvalidArgumentError(
            f"data has {len(x)} inputs but labels of shape {tuple(y.shape)}; pass (inputs, labels) with one label "
            "per input",
            argument="data",
            value=tuple(y.shape),
        )


def calibrated_write(predictions: Sequence[Any], data: Any) -> list[Any]:
    """Write ``predictions`` (:func:`ghn_init.write`) and :func:`calibrate` each model on ``data``; all or nothing:
    if calibration fails, every model is restored to what it was before the write.

    Returns:
        The reports, ``Report.calibration`` filled in.
    """
    from .api import write

    check_data(data)  # bad data fails before anything is written
    saved = [{k: v.detach().clone() for k, v in p.model.state_dict(keep_vars=True).items()} for p in predictions]
    reports = write(predictions)
    try:
        for p, report in zip(predictions, reports, strict=True):
            head = p.plan.classifier()
            report.calibration = calibrate(
                p.model, data, predicted=report.predicted, classifier=head[0] if head else None
            )
    except BaseException as e:
        with torch.no_grad():
            for p, state in zip(predictions, saved, strict=True):
                current = p.model.state_dict(keep_vars=True)
                for k, v in state.items():
                    current[k].copy_(v)
        if isinstance(e, Exception) and not isinstance(e, GHNInitError):  # the model's forward failed on data
            first = (str(e).splitlines() or [""])[0][:200]
            raise InvalidArgumentError(
                f"the model could not run on data ({type(e).__name__}: {first}); nothing was written: pass inputs "
                "the model's forward accepts",
                argument="data",
                value=type(e).__name__,
            ) from e
        raise
    return reports
