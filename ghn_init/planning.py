"""Stage 2 of the pipeline (trace -> **plan** -> predict -> write): which model tensor each graph node predicts.

A :class:`Plan` pairs graph nodes with the model tensors they will write (:class:`Target`), groups them
into decoder calls, and lists the shape the GHN is told for every node. It computes nothing with the GHN
and writes nothing.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, NamedTuple, Optional, Sequence

import torch
import torch.nn as nn

from .errors import InvalidArgumentError, InvalidArgumentTypeError
from .graph import walk
from .graph.graph import Graph
from .shapes import token_map_shape
from .validation import check_max_shape, check_model


def module_tensor(module: nn.Module, attr: str) -> Optional[torch.Tensor]:
    """The parameter or buffer ``attr`` registered on ``module`` itself, read without running any code.

    ``getattr`` would run code: a tensor parametrized with ``torch.nn.utils.parametrize`` is computed on
    every read, and for ``spectral_norm`` in training mode that computation is a power-iteration step that
    updates the parametrization's ``_u``/``_v`` buffers. Worked example: ``spectral_norm(model.fc)``, then
    ``ghn_init.predict(model, ghn)`` changed ``fc.parametrizations.weight.0._u`` and ``_v`` before this
    function (predicting must never change the model). A parametrized tensor is not registered on its
    module (its parts are, under ``parametrizations``, and the GHN leaves those alone), so it gives None here,
    as does a property or a plain attribute.

    Example:
        >>> module_tensor(nn.Linear(2, 3), "weight").shape
        torch.Size([3, 2])
    """
    for store in (module._parameters, module._buffers):
        if attr in store:
            return store[attr]
    return None


@dataclass(frozen=True)
class Slot:
    """A model tensor that a GHN can write: the parameter or buffer ``attr`` of ``module`` (:func:`module_tensor`)."""

    module: nn.Module
    module_name: str
    attr: str
    is_weight: bool
    shape: tuple[int, ...]

    @property
    def name(self) -> str:
        return f"{self.module_name}.{self.attr}" if self.module_name else self.attr

    @property
    def tensor(self) -> Optional[torch.Tensor]:
        """The tensor the model holds in this slot now (None if it holds none)."""
        return module_tensor(self.module, self.attr)


class DecoderKind(enum.Enum):
    """Which GHN head turns a node embedding into a tensor (see :meth:`ghn_init.GHN.forward`).

    ``WEIGHT``: 2-D and 4-D weights and token embeddings, through the weight decoder, decoded as
    ``(out, in, k, k)``. ``CLASSIFIER``: the model's last weight, through the weight decoder's
    classification head. ``VECTOR``: 1-D tensors, through the 1-D decoder as two rows (weight, bias).
    ``CLASSIFIER_BIAS``: the model's last bias, through the 1-D decoder and the bias head.
    ``TENSOR_3D``: other 3-D tensors, through the 1-D decoder as a ``(2 * max_channels, 1, 1)`` block.
    """

    WEIGHT = "weight"
    CLASSIFIER = "classifier"
    VECTOR = "vector"
    CLASSIFIER_BIAS = "classifier_bias"
    TENSOR_3D = "tensor_3d"


@dataclass
class Target:
    """A graph node whose decoded output becomes one tensor (two for norm layers: weight, bias).

    Attributes:
        node: the graph node's index.
        slot: the model tensor it writes.
        kind: which GHN head decodes it.
        shape: the size it is decoded at before cropping and tiling to ``slot.shape`` (channel counts
            rounded by :func:`group_size`). Targets with the same ``(kind, shape)`` are decoded in one call.
        bias: for 1-D weights (norm layers), the module's bias, predicted from the same node.
    """

    node: int
    slot: Slot
    kind: DecoderKind
    shape: tuple[int, ...]
    bias: Optional[Slot] = None

    @property
    def key(self) -> tuple[DecoderKind, tuple[int, ...]]:
        """The decoder group: targets with equal keys are decoded in one batched call."""
        return self.kind, self.shape

    @property
    def is_classifier(self) -> bool:
        return self.kind in (DecoderKind.CLASSIFIER, DecoderKind.CLASSIFIER_BIAS)


# (attribute, suffix of its graph node name), first match per module: the one "weight" a published GHN writes
WEIGHT_ATTRS = (
    ("layer_scale", ".layer_scale"),
    ("in_proj_weight", ".in_proj_weight"),  # attention
    ("pos_embedding", ".pos_embedding.weight"),  # torchvision ViT encoder
    ("weight", ".weight"),
)
BIAS_ATTRS = ("in_proj_bias", "bias")  # first match per module
LAYER_TENSORS = tuple(attr for attr, _ in WEIGHT_ATTRS) + BIAS_ATTRS  # every attribute name a GHN writes


def writable_slots(model: nn.Module) -> dict[str, Slot]:
    """The tensors the published GHNs know how to write, keyed the way graph node names refer to them.

    Per module: the first of ``layer_scale``, ``in_proj_weight`` (attention), ``pos_embedding`` (torchvision
    ViT encoder), ``weight`` it has (:data:`WEIGHT_ATTRS`), and its ``in_proj_bias`` or ``bias``.
    """
    slots: dict[str, Slot] = {}
    for module_name, m in walk.named_modules(model):
        if not m._parameters and not m._buffers:
            continue  # containers and activations: most modules of a CNN
        prefix = module_name  # the root's tensors are '.weight' etc., as the published builder names them
        weights = ((a, k, t) for a, k in WEIGHT_ATTRS if (t := module_tensor(m, a)) is not None)
        w_attr, w_key, w = next(weights, ("", "", None))
        if w is not None:
            slots[prefix + w_key] = Slot(m, module_name, w_attr, True, tuple(w.shape))
        b_attr, b = next(((a, t) for a in BIAS_ATTRS if (t := module_tensor(m, a)) is not None), ("bias", None))
        if b is not None:
            slots[prefix + "." + b_attr] = Slot(m, module_name, b_attr, False, tuple(b.shape))
    return slots


def group_size(size: int, limit: int) -> int:
    """Round a channel count so that similar tensors share a decoder call (as the published code does).

    Multiples of 3 go up to the next multiple of 4 (e.g. 96 -> 128) and sizes of at least half the
    decoder's ``limit`` go to the limit.

    Example:
        >>> [group_size(n, 64) for n in (3, 8, 12, 24, 31, 200)]
        [4, 8, 16, 64, 31, 64]
    """
    n = min(size, limit)
    if n % 3 == 0:
        n = n // 3 * 4
    return limit if n >= limit / 2 else n


class Plan(NamedTuple):
    """What a GHN will predict for one graph.

    Attributes:
        targets: the graph nodes whose decoded output is written, with the model tensor(s) each writes.
        shapes: per graph node, the shape the GHN's shape encoder is told (None where it has none).
    """

    targets: list[Target]
    shapes: list[Optional[tuple[int, ...]]]

    def predicted(self, predict_classifier: bool = True) -> list[Target]:
        """The targets a prediction decodes: all of them, or all but the classifier's."""
        return [t for t in self.targets if predict_classifier or not t.is_classifier]

    def slots(self, predict_classifier: bool = True) -> dict[str, Slot]:
        """{tensor name: slot} of every tensor the plan predicts (norm biases included)."""
        out: dict[str, Slot] = {}
        for target in self.predicted(predict_classifier):
            out[target.slot.name] = target.slot
            if target.bias is not None:
                out[target.bias.name] = target.bias
        return out

    def classifier(self) -> list[str]:
        """The tensors the GHN decodes as the classifier, weight first (the ones ``predict_classifier=False``
        leaves at default init); empty if the plan has none."""
        kept = self.slots(predict_classifier=False)
        return [name for name in self.slots() if name not in kept]


def plan(graph: Graph, model: nn.Module, max_shape: Sequence[int]) -> Plan:
    """Match graph nodes to model tensors.

    Args:
        graph: the model's graph (:func:`ghn_init.trace`).
        model: the model the graph was recorded from.
        max_shape: the GHN's largest decoded shape ``(out, in, k, k)`` (``ghn.config.max_shape``).

    Returns:
        A :class:`Plan`: the targets, and the shape told to the GHN for every node.

    Raises:
        InvalidArgumentError: ``graph`` is not a :class:`Graph` or was recorded from another model, ``model`` is
            not an ``nn.Module``, or ``max_shape`` is not four positive ints (``.argument`` names which).

    Example:
        >>> import ghn_init, torch.nn as nn
        >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))
        >>> graph = ghn_init.trace(model, input_size=(3, 8, 8))
        >>> [t.slot.name for t in ghn_init.plan(graph, model, (64, 64, 16, 16)).targets]
        ['0.weight', '0.bias', '1.weight']
    """
    _check_plan_arguments(graph, model, max_shape)
    slots = writable_slots(model)
    n = len(graph.nodes)
    targets: list[Target] = []
    shapes: list[Optional[tuple[int, ...]]] = [None] * n
    for i, node in enumerate(graph.nodes):
        if node.module is None and "pool" not in node.type:
            continue
        name = node.published_name
        if node.module is not None and node.module_name == "":
            name = "." + name
        key_name = name if name.endswith((".weight", ".bias", "in_proj_weight", "in_proj_bias")) else name + ".weight"
        slot = slots.get(key_name) if node.module is not None else None
        if slot is None:
            shapes[i] = node.shape
            continue
        shapes[i] = slot.shape
        sz = slot.shape
        last_weight = i == n - 2 and ".weight" in name
        last_bias = i == n - 1 and ".bias" in name
        kind, shape = decoding(sz, max_shape, last_weight=last_weight, last_bias=last_bias)
        if kind is None:
            shapes[i] = node.shape
            continue
        bias = None
        if len(sz) == 1 and slot.is_weight:
            b = module_tensor(slot.module, "bias")
            if b is not None:
                bias = Slot(slot.module, slot.module_name, "bias", False, tuple(b.shape))
        targets.append(Target(i, slot, kind, shape, bias))
    return Plan(targets, shapes)


def _check_plan_arguments(graph: Any, model: Any, max_shape: Any) -> None:
    """``graph`` is a :class:`Graph` recorded from ``model`` (an ``nn.Module``), ``max_shape`` four positive ints.

    A graph of another model matched no tensor, or the wrong ones, and planned nothing without a word.
    """
    if not isinstance(graph, Graph):
        raise InvalidArgumentTypeError(
            f"graph must be a Graph from ghn_init.trace(model), got {type(graph).__name__}",
            argument="graph",
            value=graph,
        )
    check_model(model)
    check_max_shape(max_shape)
    mine = {id(m) for m in walk.modules(model)}
    foreign = [n.name for n in graph.nodes if n.module is not None and id(n.module) not in mine]
    if foreign:
        raise InvalidArgumentError(
            f"the graph was not recorded from this {type(model).__name__}: {len(foreign)} of its tensors ("
            f"{', '.join(foreign[:3])}) belong to another model; pass the model given to ghn_init.trace()",
            argument="graph",
            value=foreign[:3],
        )


def decoding(
    sz: Sequence[int], max_shape: Sequence[int], *, last_weight: bool = False, last_bias: bool = False
) -> tuple[Optional[DecoderKind], tuple[int, ...]]:
    """The decoder kind and decoded shape of a tensor of shape ``sz`` (``(None, ())``: no GHN head fits).

    Args:
        sz: the model tensor's shape.
        max_shape: the GHN's largest decoded shape ``(out, in, k, k)``.
        last_weight: the tensor is the weight of the model's last layer (the classifier).
        last_bias: the tensor is the bias of the model's last layer.

    Example:
        >>> decoding((96, 12, 3, 3), (64, 64, 16, 16))
        (<DecoderKind.WEIGHT: 'weight'>, (64, 16, 3, 3))
        >>> decoding((10, 512), (64, 64, 16, 16), last_weight=True)
        (<DecoderKind.CLASSIFIER: 'classifier'>, (10, 64))
    """
    sz = tuple(sz)
    if len(sz) == 1:
        kind = DecoderKind.CLASSIFIER_BIAS if last_bias else DecoderKind.VECTOR
        return kind, (group_size(sz[0], max_shape[0]),)
    if last_weight:
        return DecoderKind.CLASSIFIER, (group_size(sz[0], max_shape[0]), group_size(sz[1], max_shape[1]))
    if len(sz) == 2:
        return DecoderKind.WEIGHT, (group_size(sz[0], max_shape[0]), group_size(sz[1], max_shape[1]), 1, 1)
    if len(sz) == 3:
        tokens = token_map_shape(sz)  # token embeddings [1, tokens, dim], decoded as a (1, dim, side, side) map
        if tokens is not None:
            return DecoderKind.WEIGHT, tokens
        return DecoderKind.TENSOR_3D, tuple(group_size(s, m) for s, m in zip(sz, max_shape, strict=False))
    if len(sz) == 4:
        return DecoderKind.WEIGHT, (group_size(sz[0], max_shape[0]), group_size(sz[1], max_shape[1]), sz[2], sz[3])
    return None, ()
