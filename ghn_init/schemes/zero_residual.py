"""``zero-residual``: every residual branch starts at zero, so every residual block starts as the identity
(Goyal et al. 2017; timm's ``zero_init_last``, torchvision's ``zero_init_residual``)."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
import torch.nn as nn

from ..errors import UnsupportedModelError
from .base import SchemeReport, input_batch

__all__ = ["zero_residual", "residual_gains"]

NORMS = ("bn", "ln")
LAYERS = ("conv", "sep_conv", "dil_conv", "msa")
PASS_THROUGH = ("max_pool", "avg_pool", "glob_avg")  # map a zero input to a zero output


def _branch_end(graph, preds: list[list[int]], start: int) -> Optional[list[str]]:
    """The tensors whose zeroing makes the branch ending at node ``start`` output zero.

    Walks back from ``start``: a norm layer's gain (bn/ln weight); or, if the branch ends in a conv/linear
    layer (pre-norm transformers, ConvNeXt), that layer's weight and bias. Pooling passes zeros through.
    None if the branch ends in something else (a concat, a nested sum, an embedding).
    """
    names: list[str] = []
    node = start
    while True:
        n = graph.nodes[node]
        if n.is_param and n.type in NORMS:
            return [n.name]
        if n.is_param and n.type in LAYERS:
            return [n.name] + names
        if n.is_param and n.type == "bias":
            names.append(n.name)
        elif n.is_param or n.type not in PASS_THROUGH:
            return None
        if len(preds[node]) != 1:
            return None
        node = preds[node][0]


def residual_gains(graph) -> tuple[list[list[str]], list[str]]:
    """From a recorded GHN graph (:func:`ghn_init.trace`), the tensors to zero in each residual branch.

    A residual join is a ``sum`` node whose inputs share an ancestor (the fork): for each input, the branch is the
    nodes between the fork and the sum. The input whose branch holds the fewest parameter nodes is the shortcut
    (an identity has none, a ResNet downsample one conv); every other input with more is a residual branch, and
    :func:`_branch_end` finds what makes it output zero. No layer names are used.

    Returns:
        ``(gains, notes)``: per residual branch the tensor names to zero; notes on sums that were skipped.
    """
    n = len(graph.nodes)
    preds: list[list[int]] = [[] for _ in range(n)]
    for s, d in graph.edges:
        preds[d].append(s)
    anc = [0] * n  # bitmask of ancestors, nodes being in topological order
    for i in range(n):
        for p in preds[i]:
            anc[i] |= anc[p] | (1 << p)
    is_param = 0
    for i, node in enumerate(graph.nodes):
        if node.is_param:
            is_param |= 1 << i
    gains: list[list[str]] = []
    notes: list[str] = []
    for i, node in enumerate(graph.nodes):
        if node.type != "sum" or len(preds[i]) < 2:
            continue
        common = ~0
        for p in preds[i]:
            common &= anc[p] | (1 << p)
        if common <= 0:
            continue  # e.g. adding a position embedding: not a residual join
        fork = common.bit_length() - 1  # the latest common ancestor
        before = anc[fork] | (1 << fork)
        counts = {p: bin((anc[p] | (1 << p)) & ~before & is_param).count("1") for p in preds[i]}
        shortcut = min(counts.values())
        for p, c in counts.items():
            if c > shortcut:
                end = _branch_end(graph, preds, p)
                if end is None:
                    notes.append(f"the branch into {node.name} (node {i}) ends in {graph.nodes[p].type}: left as is")
                else:
                    gains.append(end)
    return gains, notes


def zero_residual(
    model: nn.Module,
    *,
    data: Any = None,
    generator: Optional[torch.Generator] = None,
    input_size: Optional[Sequence[int]] = None,
) -> SchemeReport:
    """Zero the last gain of every residual branch, so every residual block ``x + F(x)`` starts as the identity
    (Goyal et al., "Accurate, Large Minibatch SGD", 2017; timm's ``zero_init_last``; Fixup, SkipInit).

    The branches come from the recorded GHN graph (:func:`ghn_init.trace`), not from layer names: every ``sum``
    node whose inputs fork from a common node is a residual join, the input with more layers the branch
    (:func:`residual_gains`). Its last norm layer's gain ``gamma`` is zeroed (``y = gamma x_hat + beta`` is then
    ``beta``, zero at the default ``beta = 0``); a branch that ends in a conv/linear layer (pre-norm transformers,
    ConvNeXt) has that layer's weight and bias zeroed instead. Then ``F(x) = 0`` and the block passes ``x`` on
    (through the shortcut's projection where it has one). Gradients reach the zeroed gains as long as the path from
    the blocks to the loss is not zero too, and they then grow from zero. A torchvision ``VisionTransformer``
    starts with a zero classifier and a zero class token as well: its first step trains only the classifier, and
    until the attention branches grow the class token's features are the same for every image, so expect a slow
    start there (on the leaderboard's small ViT, few-shot and 100 steps, this scheme is far below ``default``).

    Args:
        model: initialized in place.
        data: optional inputs; their size is the recording size.
        generator: not used (the scheme draws nothing).
        input_size: ``(C, H, W)`` to record the model with (default: from ``data``, else read from the model).

    Returns:
        :class:`SchemeReport`: the zeroed tensors.

    Raises:
        UnsupportedModelError: the model has no residual branch.
        TraceError: the model cannot be recorded.

    Example:
        >>> model = torchvision.models.resnet18()
        >>> ghn_init.get_scheme("zero-residual")(model).touched[:2]  # doctest: +SKIP
        ['layer1.0.bn2.weight', 'layer1.1.bn2.weight']
    """
    from ..graph import trace

    if input_size is None and data is not None:
        input_size = tuple(input_batch(data, 1)[0].shape[1:])
    graph = trace(model, input_size)
    gains, notes = residual_gains(graph)
    if not gains:
        raise UnsupportedModelError(
            f"zero-residual: {type(model).__name__} has no residual branch (x + F(x)) in its recorded graph; "
            "use another scheme",
            scheme="zero-residual",
            model=type(model).__name__,
        )
    params = dict(model.named_parameters())
    report = SchemeReport("zero-residual", type(model).__name__, notes=notes)
    with torch.no_grad():
        for names in gains:
            for name in names:
                if name in params and name not in report.touched:
                    params[name].zero_()
                    report.touched.append(name)
    return report
