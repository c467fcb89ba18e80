"""What ``apply`` did to a model: which tensors were predicted, which kept their default init and why."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import torch.nn as nn

from .graph import Graph
from .graph.autograd_trace import parameter_owners
from .networks import GHN
from .planning import Slot


@dataclass
class Report:
    """What ``apply`` did to one model."""

    model: str
    ghn: str
    tracer: str
    nodes: int
    predicted: list[str] = field(default_factory=list)
    left_alone: dict[str, str] = field(default_factory=dict)  # tensor name -> reason
    numel_predicted: int = 0
    numel_total: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def fraction_predicted(self) -> float:
        return self.numel_predicted / self.numel_total if self.numel_total else 0.0

    def reasons(self) -> dict[str, list[str]]:
        grouped: dict[str, list[str]] = {}
        for name, reason in self.left_alone.items():
            grouped.setdefault(reason, []).append(name)
        return grouped

    def __str__(self) -> str:
        t = self.seconds
        lines = [
            f"ghn-init: {self.model} <- {self.ghn}",
            f"  predicted  {len(self.predicted):5d} tensors  {self.numel_predicted:>13,d} / {self.numel_total:,d} "
            f"parameters ({100 * self.fraction_predicted:.1f}%)",
            f"  graph      {self.nodes:5d} nodes    tracer: {self.tracer}",
            "  time       "
            + "  ".join(f"{k} {v * 1000:.0f} ms" for k, v in t.items()),
        ]
        for reason, names in sorted(self.reasons().items(), key=lambda kv: -len(kv[1])):
            shown = ", ".join(names[:3]) + (f", ... (+{len(names) - 3})" if len(names) > 3 else "")
            lines.append(f"  left alone {len(names):5d} tensors  {reason}: {shown}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


def why_left_alone(name: str, module: nn.Module, used: bool, graph_names: set[str], norm_bias_owners: set[str]) -> str:
    """Why the tensor ``name`` (held directly by ``module``) keeps its default initialization."""
    if name in norm_bias_owners:
        return "norm bias of a weight the GHN does not predict"
    if name in graph_names:
        return "in the graph, but the published GHN writes no tensor for it"
    if not used:
        return "not used by the forward pass in eval mode (e.g. an auxiliary head): no graph node"
    kind = type(module).__name__
    is_layer_param = name.rsplit(".", 1)[-1] in ("weight", "bias")
    if not is_layer_param and any(True for _ in module.children()):  # a token, embedding, scale... of a block
        return f"parameter held directly by {kind} (token, position embedding, scale...): no GHN node type for it"
    return f"{kind} is outside the GHN vocabulary (register_module can map it)"


def build_report(
    model: nn.Module, ghn: GHN, graph: Graph, result: Mapping[str, tuple[Slot, Any]], seconds: Mapping[str, float]
) -> Report:
    """Describe what a prediction writes into ``model``: every parameter is either predicted or left alone, with why.

    Args:
        model: the model.
        ghn: the GHN that predicts.
        graph: the model's graph.
        result: {tensor name: (slot, value)} of the tensors that will be written (values are not read).
        seconds: timings to carry (``{"load": ..., "trace": ...}``).
    """
    rep = Report(
        model=type(model).__name__,
        ghn=str(ghn.config.extra.get("name") or ghn.config.extra.get("source") or ghn.config.kind),
        tracer=graph.tracer,
        nodes=len(graph.nodes),
        seconds=dict(seconds),
        notes=list(graph.notes),
    )
    by_tensor = {id(slot.module.__dict__["_parameters"].get(slot.attr)): name for name, (slot, _) in result.items()}
    graph_names = {n.name for n in graph.nodes if n.is_param}
    # biases of norm layers whose weight node exists but was not written
    norm_biases = {n.name[: -len("weight")] + "bias" for n in graph.nodes if n.type in ("bn", "ln")}
    unwritten_norm_biases = norm_biases - set(result)
    owners = parameter_owners(model)  # id(tensor) -> every (name, module): tied weights have several
    for name, p in model.named_parameters():
        rep.numel_total += p.numel()
        if id(p) in by_tensor:
            rep.predicted.append(name)
            rep.numel_predicted += p.numel()
        else:
            pairs = owners.get(id(p), [(name, model)])
            module, aliases = pairs[0][1], [alias for alias, _ in pairs]
            used = not graph.recorded or any(a in graph.recorded for a in aliases)
            rep.left_alone[name] = why_left_alone(name, module, used, graph_names, unwritten_norm_biases)
    return rep
