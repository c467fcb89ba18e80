"""Stage 2 of the pipeline (trace -> **plan** -> predict -> write): which model tensor each graph node predicts.

A :class:`Plan` pairs graph nodes with the model tensors they will write (:class:`Target`), groups them
into decoder calls, and lists the shape the GHN is told for every node. It computes nothing with the GHN
and writes nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Optional, Sequence

import torch
import torch.nn as nn

from .graph.graph import Graph


@dataclass(frozen=True)
class Slot:
    """A model tensor that a GHN can write: ``getattr(module, attr)``."""

    module: nn.Module
    module_name: str
    attr: str
    is_weight: bool
    shape: tuple[int, ...]

    @property
    def name(self) -> str:
        return f"{self.module_name}.{self.attr}" if self.module_name else self.attr


@dataclass
class Target:
    """A graph node whose decoded output becomes one tensor (two for norm layers: weight, bias)."""

    node: int
    slot: Slot
    key: tuple[int, ...]  # decoder group: nodes with the same key are decoded together
    bias: Optional[Slot] = None  # 1-D weights (norm layers) also predict the module's bias

    @property
    def is_classifier(self) -> bool:
        return len(self.key) == 2 and self.key[1] != 0


def writable_slots(model: nn.Module) -> dict[str, Slot]:
    """The tensors the published GHNs know how to write, keyed the way graph node names refer to them.

    Per module: its ``weight`` (or ``in_proj_weight`` of attention, or ``pos_embedding`` of a
    torchvision ViT encoder) and its ``bias`` (or ``in_proj_bias``).
    """
    slots: dict[str, Slot] = {}
    for module_name, m in model.named_modules():
        prefix = module_name  # the root's tensors are '.weight' etc., as the published builder names them
        if getattr(m, "layer_scale", None) is not None:
            w_attr, w_key = "layer_scale", ".layer_scale"
        elif getattr(m, "in_proj_weight", None) is not None:
            w_attr, w_key = "in_proj_weight", ".in_proj_weight"
        elif getattr(m, "pos_embedding", None) is not None:
            w_attr, w_key = "pos_embedding", ".pos_embedding.weight"
        elif getattr(m, "weight", None) is not None:
            w_attr, w_key = "weight", ".weight"
        else:
            w_attr = w_key = ""
        if w_attr and isinstance(getattr(m, w_attr), torch.Tensor):
            slots[prefix + w_key] = Slot(m, module_name, w_attr, True, tuple(getattr(m, w_attr).shape))
        b_attr = "in_proj_bias" if getattr(m, "in_proj_bias", None) is not None else "bias"
        b = getattr(m, b_attr, None)
        if isinstance(b, torch.Tensor):
            slots[prefix + "." + b_attr] = Slot(m, module_name, b_attr, False, tuple(b.shape))
    return slots


def _group_size(size: int, limit: int) -> int:
    """Round a size to share decoder calls: multiples of 3 go to the next multiple of 4, big ones to the limit."""
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


def plan(graph: Graph, model: nn.Module, max_shape: Sequence[int]) -> Plan:
    """Match graph nodes to model tensors.

    Args:
        graph: the model's graph (:func:`ghn_init.trace`).
        model: the model the graph was recorded from.
        max_shape: the GHN's largest decoded shape ``(out, in, k, k)`` (``ghn.config.max_shape``).

    Returns:
        A :class:`Plan`: the targets, and the shape told to the GHN for every node.

    Example:
        >>> import ghn_init, torch.nn as nn
        >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))
        >>> graph = ghn_init.trace(model, input_size=(3, 8, 8))
        >>> [t.slot.name for t in ghn_init.plan(graph, model, (64, 64, 16, 16)).targets]
        ['0.weight', '0.bias', '1.weight']
    """
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
        if len(sz) == 1:
            key: tuple[int, ...] = (_group_size(sz[0], max_shape[0]), -1 if last_bias else 0)
        elif last_weight:
            key = (_group_size(sz[0], max_shape[0]), _group_size(sz[1], max_shape[1]))
        elif len(sz) == 2:
            key = (_group_size(sz[0], max_shape[0]), _group_size(sz[1], max_shape[1]), 1, 1)
        elif len(sz) == 3:
            if sz[0] == 1 and min(sz[1:]) > 1:  # token embeddings [1, tokens, dim]
                side = int(math.floor(sz[1] ** 0.5))
                key = (1, sz[2], side, side)
            else:
                key = tuple(_group_size(s, m) for s, m in zip(sz, max_shape))
        elif len(sz) == 4:
            key = (_group_size(sz[0], max_shape[0]), _group_size(sz[1], max_shape[1]), sz[2], sz[3])
        else:
            shapes[i] = node.shape
            continue
        bias = None
        if len(sz) == 1 and slot.is_weight:
            b = getattr(slot.module, "bias", None)
            if isinstance(b, torch.Tensor):
                bias = Slot(slot.module, slot.module_name, "bias", False, tuple(b.shape))
        targets.append(Target(i, slot, key, bias))
    return Plan(targets, shapes)
