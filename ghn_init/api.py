"""The public entry point: ``apply(model)`` writes GHN-predicted parameters into a model, in place."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn

from .graph import Graph, trace
from .hub import GHNSource, load_ghn
from .networks import GHN
from .postprocess import PostProcess, postprocess_predictions
from .predict import Slot, decode, plan



class StrictError(RuntimeError):
    """``apply(..., strict=True)`` found trainable tensors the GHN does not predict."""


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
    postprocess: str = "none"  # what was done to the predictions before writing (see ghn_init.postprocess)

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
        if self.postprocess != "none":
            lines.append(f"  postprocess {self.postprocess}")
        for reason, names in sorted(self.reasons().items(), key=lambda kv: -len(kv[1])):
            shown = ", ".join(names[:3]) + (f", ... (+{len(names) - 3})" if len(names) > 3 else "")
            lines.append(f"  left alone {len(names):5d} tensors  {reason}: {shown}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _why_left_alone(name: str, module: nn.Module, used: bool, graph_names: set[str], norm_bias_owners: set[str]) -> str:
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


def apply(
    model: Union[nn.Module, Sequence[nn.Module]],
    ghn: GHNSource = None,
    *,
    predict_classifier: bool = True,
    strict: bool = False,
    input_size: Optional[Sequence[int]] = None,
    postprocess: Union[str, PostProcess, None] = "default",
    generator: Optional[torch.Generator] = None,
) -> Union[Report, list[Report]]:
    """Initialize ``model`` (or a list of models) with parameters predicted by a GHN, in place.

    ``ghn`` is a loaded :class:`GHN`, a registry name, a local path, an ``hf://`` source, or None for
    the default GHN. The GHN runs on the model's device; each tensor keeps its dtype. Either every
    predicted tensor is written or, if anything fails, none is. Returns a :class:`Report` per model.

    ``postprocess`` transforms the predictions before they are written (:mod:`ghn_init.postprocess`):
    ``"default"`` uses the GHN's recommendation (its config's ``postprocess``; a published checkpoint
    loaded from its file has none and keeps its exact predictions), ``"none"``/None writes them as
    predicted, ``"orth"``, ``"noise"``, ``"noise=BETA"`` or ``"orth+noise"`` choose. Noise is drawn
    from ``generator`` (a CPU ``torch.Generator``; default: torch's global RNG).
    """
    models = list(model) if isinstance(model, (list, tuple)) else [model]
    for m in models:
        if not isinstance(m, nn.Module):
            raise TypeError(f"apply expects an nn.Module (or a list of them), got {type(m).__name__}")
    start = time.perf_counter()
    net = load_ghn(ghn)  # a GHN instance is returned as is
    loaded = time.perf_counter()
    pp = PostProcess.parse(net.config.postprocess if postprocess == "default" else postprocess)

    graphs: list[Graph] = []
    plans = []
    for m in models:
        graph = trace(m, input_size, virtual_edge_cutoff=net.virtual_edge_cutoff)
        graphs.append(graph)
        plans.append(plan(graph, m, net.config.max_shape))
    traced = time.perf_counter()

    device = _model_device(models[0])
    if any(_model_device(m) != device for m in models):
        raise ValueError("all models passed to one apply call must be on the same device")
    if next(net.parameters()).device != device:
        net = net.to(device)
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            results = decode(net, graphs, plans, predict_classifier=predict_classifier)
        raw_names = [set(r) for r in results]
        results = [postprocess_predictions(m, r, pp, generator) for m, r in zip(models, results)]
    finally:
        net.train(was_training)
    predicted_at = time.perf_counter()

    reports = [
        _report(m, net, g, r, seconds={"load": loaded - start, "trace": (traced - loaded) / len(models)})
        for m, g, r in zip(models, graphs, results)
    ]
    if strict:
        for m, rep in zip(models, reports):
            trainable = {n for n, p in m.named_parameters() if p.requires_grad}
            missing = sorted(set(rep.left_alone) & trainable)
            if missing:
                raise StrictError(
                    f"{rep.model}: {len(missing)} trainable tensors are not predicted by the GHN "
                    f"(e.g. {', '.join(missing[:5])}); pass strict=False to keep their default init"
                )
    _write_all(results)
    written = time.perf_counter()
    for rep, before, after in zip(reports, raw_names, results):
        rep.postprocess = str(pp)
        for name in before - set(after):
            if name in rep.left_alone:
                rep.left_alone[name] = f"left at the model's init by post-processing ({pp})"
        rep.seconds["predict"] = (predicted_at - traced) / len(models)
        rep.seconds["write"] = (written - predicted_at) / len(models)
    return reports if isinstance(model, (list, tuple)) else reports[0]


def _report(model: nn.Module, ghn: GHN, graph: Graph, result: dict[str, tuple[Slot, torch.Tensor]], seconds: dict) -> Report:
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
    unwritten_norm_biases = {n.name[: -len("weight")] + "bias" for n in graph.nodes if n.type in ("bn", "ln")} - set(result)
    owners = {}  # id(tensor) -> (module, every name it has: tied weights have several)
    for module_name, module in model.named_modules(remove_duplicate=False):
        for attr, t in module._parameters.items():
            if t is not None:
                full = f"{module_name}.{attr}" if module_name else attr
                owners.setdefault(id(t), (module, []))[1].append(full)
    for name, p in model.named_parameters():
        rep.numel_total += p.numel()
        if id(p) in by_tensor:
            rep.predicted.append(name)
            rep.numel_predicted += p.numel()
        else:
            module, aliases = owners.get(id(p), (model, [name]))
            used = not graph.recorded or any(a in graph.recorded for a in aliases)
            rep.left_alone[name] = _why_left_alone(name, module, used, graph_names, unwritten_norm_biases)
    return rep


def _prepared(target: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``value`` in the target's dtype, device and memory layout, owning exactly its own storage."""
    value = value.detach()
    same = (
        value.dtype == target.dtype
        and value.device == target.device
        and value.stride() == target.stride()
        and value.storage_offset() == 0
        and value.untyped_storage().nbytes() == value.numel() * value.element_size()
    )
    return value if same else torch.empty_like(target).copy_(value)


def _swap(target: torch.Tensor, data: torch.Tensor) -> None:
    target.data = data


def _write_all(results: list[dict[str, tuple[Slot, torch.Tensor]]]) -> None:
    """Write predictions into the models, all or nothing.

    Every value is checked and converted first; then each tensor's ``.data`` is swapped for its new
    value (the ``nn.Parameter`` objects stay, so optimizers built earlier still see them). Only
    swaps happen after the first write, and a failure among them swaps the old data back.
    """
    prepared = []
    for result in results:
        for name, (slot, value) in result.items():
            target = getattr(slot.module, slot.attr)
            if not isinstance(target, torch.Tensor) or tuple(target.shape) != tuple(value.shape):
                raise RuntimeError(
                    f"cannot write {name}: predicted shape {tuple(value.shape)}, model tensor "
                    f"{tuple(target.shape) if isinstance(target, torch.Tensor) else type(target).__name__}"
                )
            prepared.append((target, _prepared(target, value)))
    previous: list[tuple[torch.Tensor, torch.Tensor]] = []
    try:
        for target, data in prepared:
            previous.append((target, target.data))
            _swap(target, data)
    except BaseException:
        for target, data in reversed(previous):
            target.data = data
        raise
