"""What ``apply`` did to a model: which tensors were predicted, which kept their default init and why."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Optional

import torch
import torch.nn as nn

from .errors import listed
from .graph import Graph, unwrap, walk
from .graph.autograd_trace import parameter_owners
from .networks import GHN
from .planning import LAYER_TENSORS, Plan, Slot

__all__ = ["Report", "build_report", "why_left_alone", "ghn_name", "model_name", "suspect_buffers"]


@dataclass
class Report:
    """What ``apply`` did to one model.

    Attributes:
        model: the model's class name (a ``torch.compile``'d model is named after the model it wraps).
        ghn: the GHN's name (registry name, the path it was loaded from, or Hub source; "fine-tuned from ..." where
            it applies).
        ghn_kind: the GHN's architecture, ``"ghn2"`` or ``"ghn3"`` (``ghn`` names which GHN it is).
        tracer: how the graph was recorded (``autograd-meta``, ``fx`` or ``autograd-forward``).
        nodes: graph nodes.
        predicted: names of the tensors written.
        left_alone: ``{name: reason}`` for every parameter that keeps its value.
        numel_predicted: elements written.
        numel_total: elements in all parameters.
        seconds: time per stage.
        notes: remarks on the recording (real forward, cycles, ...).
        suspect_buffers: ``{name: why}`` for buffers whose values cannot be a layer's state (e.g. left
            uninitialized by ``to_empty``); the GHN never writes buffers, so they stay that way.
        postprocess: what was done to the predictions before writing (see :mod:`ghn_init.postprocess`).
        calibration: with ``apply(..., data=)``: ``{layer or "batchnorm": what changed}`` (:mod:`ghn_init.calibrate`).
    """

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
    suspect_buffers: dict[str, str] = field(default_factory=dict)
    postprocess: str = "none"  # what was done to the predictions before writing (see ghn_init.postprocess)
    calibration: dict[str, str] = field(default_factory=dict)  # apply(..., data=): layer -> what changed
    ghn_kind: str = ""  # "ghn2" or "ghn3"

    @property
    def fraction_predicted(self) -> float:
        """Share of the parameters' elements that were predicted (0.0 for a model without parameters)."""
        return self.numel_predicted / self.numel_total if self.numel_total else 0.0

    def reasons(self) -> dict[str, list[str]]:
        """``{reason: [tensor names]}``: the left-alone tensors grouped by why."""
        grouped: dict[str, list[str]] = {}
        for name, reason in self.left_alone.items():
            grouped.setdefault(reason, []).append(name)
        return grouped

    def to_dict(self) -> dict[str, Any]:
        """Every field, plus ``fraction_predicted``, as plain JSON-serializable Python values.

        Example:
            >>> import json, ghn_init, torchvision
            >>> report = ghn_init.apply(torchvision.models.resnet18(), "bundled", postprocess="none")
            >>> json.loads(json.dumps(report.to_dict()))["fraction_predicted"]
            1.0
        """
        d = asdict(self)
        d["fraction_predicted"] = self.fraction_predicted
        return d

    def __str__(self) -> str:
        t = self.seconds
        lines = [
            f"ghn-init: {self.model} <- {self.ghn}"
            + (f" ({self.ghn_kind})" if self.ghn_kind and self.ghn_kind not in self.ghn else ""),
            f"  predicted  {len(self.predicted):5d} tensors  {self.numel_predicted:>13,d} / {self.numel_total:,d} "
            f"parameters ({100 * self.fraction_predicted:.1f}%)",
            f"  graph      {self.nodes:5d} nodes    tracer: {self.tracer}",
            "  time       " + "  ".join(f"{k} {v * 1000:.0f} ms" for k, v in t.items()),
        ]
        if self.postprocess != "none":
            lines.append(f"  postprocess {self.postprocess}")
        for reason, names in sorted(self.reasons().items(), key=lambda kv: -len(kv[1])):
            lines.append(f"  left alone {len(names):5d} tensors  {reason}: {listed(names, 3)}")
        if self.suspect_buffers:
            names = list(self.suspect_buffers)
            shown = listed(names, 3)
            lines.append(
                f"  WARNING    {len(names):5d} buffers look uninitialized (not written by the GHN): {shown}; "
                "reset them, e.g. m.reset_running_stats() for norm layers"
            )
        if self.calibration:
            lines.append(f"  calibrated {len(self.calibration):5d} layers on data (Report.calibration)")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


CLASSIFIER_KEPT = "classifier kept at its default init (predict_classifier=False)"
PUBLISHED_RENAME = (
    "in the graph as {published!r}: the published builder cuts names at 'stem'/'pos_enc' (DeepNets-1M naming) "
    "and finds no tensor under that name, so the published GHN leaves it"
)


def why_left_alone(
    name: str,
    module: nn.Module,
    used: bool,
    graph_names: Mapping[str, str],
    norm_bias_owners: set[str],
    *,
    ran: bool = False,
) -> str:
    """Why the tensor ``name`` (held directly by ``module``) keeps its default initialization.

    Args:
        name: the tensor's qualified name.
        module: the module holding it directly.
        used: the recorded forward pass reached it from the outputs.
        graph_names: ``{graph node name: the name the published builder matched it by}``.
        norm_bias_owners: biases of norm layers whose weight is not written.
        ran: its module was called during the recorded forward pass.

    Returns:
        One line.
    """
    attr = name.rsplit(".", 1)[-1]
    kind = type(module).__name__
    if name in norm_bias_owners:
        return "norm bias of a weight the GHN does not predict"
    if ".parametrizations." in f".{name}" and attr.startswith("original"):
        return (
            "parametrized tensor (torch.nn.utils.parametrize, e.g. weight_norm/spectral_norm): the GHN predicts "
            "a layer's weight, not the parts it is computed from"
        )
    hook_part = attr.endswith(("_g", "_v", "_orig")) and hasattr(module, attr[: attr.rfind("_")])
    if attr in ("weight_g", "weight_v", "weight_orig") or hook_part:
        return (
            f"{attr} of a weight computed by a hook (torch.nn.utils.weight_norm/spectral_norm): the GHN predicts "
            "a layer's weight, not the parts it is computed from"
        )
    if attr not in LAYER_TENSORS:
        if any(True for _ in module.children()):  # a token, embedding, scale... of a block
            return f"parameter held directly by {kind} (token, position embedding, scale...): no GHN node type for it"
        return f"{attr!r} of {kind}: the GHN predicts only a layer's weight and bias"
    if name in graph_names:
        published = graph_names[name]
        if published != name:
            return PUBLISHED_RENAME.format(published=published)
        return "in the graph, but the published GHN writes no tensor for it"
    if not used:
        if ran:
            return (
                "its layer ran, but no gradient path leads from it to the outputs in eval mode "
                "(detached or discrete: e.g. detection proposals): no graph node"
            )
        return "not used by the forward pass in eval mode (e.g. an auxiliary head): no graph node"
    return f"{kind} is outside the GHN vocabulary (register_module can map it)"


def ghn_name(ghn: GHN) -> str:
    """The name a report gives ``ghn``: its registry name, else where it was loaded from, else its kind."""
    extra = ghn.config.extra
    name = str(extra.get("name") or extra.get("source") or ghn.config.kind)
    base = extra.get("fine_tuned_from")
    return f"{name} (fine-tuned from {base})" if base and base != name else name


def model_name(model: nn.Module) -> str:
    """The model's class name; ``torch.compile`` wrappers are named after the model they wrap."""
    return type(unwrap(model)).__name__


_CHECKED_TOGETHER = 1 << 16  # buffers up to this many values are concatenated and checked in one go


def _is_variance(name: str) -> bool:
    return name.rsplit(".", 1)[-1] == "running_var"


def _all_sound(part: list[tuple[str, torch.Tensor]]) -> torch.Tensor:
    """A 0-d bool tensor: every value of ``part``'s buffers is finite and every running variance positive."""
    values = part[0][1].flatten() if len(part) == 1 else torch.cat([b.flatten() for _, b in part])
    sound = torch.isfinite(values).all()
    variances = [b.flatten() for n, b in part if _is_variance(n)]
    if variances:
        sound = sound & (torch.cat(variances) > 0).all()
    return sound


def suspect_buffers(model: nn.Module) -> dict[str, str]:
    """Buffers whose values no layer could hold: left uninitialized (``to_empty``) or corrupted.

    Floating buffers with non-finite values, and norm running variances that are not all positive
    (a fresh norm layer has ones). Meta tensors hold no values and are not checked.

    Args:
        model: the model.

    Returns:
        ``{buffer name: why}``.
    """
    checked: dict[tuple[torch.device, torch.dtype], list[tuple[str, torch.Tensor]]] = {}
    for name, b in walk.named_tensors(model, "_buffers"):
        if b.is_meta or not b.is_floating_point() or b.numel() == 0:
            continue
        b = b if b.element_size() > 1 else b.float()  # torch has no isfinite or > for float8
        checked.setdefault((b.device, b.dtype), []).append((name, b))
    found: dict[str, str] = {}
    with torch.no_grad():
        for group in checked.values():
            # small buffers are checked all together (one check instead of a few small ops per buffer: a
            # hundred BatchNorms are most of a CNN's buffers), large ones one by one (no copy); buffer by
            # buffer only where a check fails, with one host sync per device and dtype
            small = [(n, b) for n, b in group if b.numel() <= _CHECKED_TOGETHER]
            parts = ([small] if small else []) + [[(n, b)] for n, b in group if b.numel() > _CHECKED_TOGETHER]
            flags = torch.stack([_all_sound(part) for part in parts]).tolist()
            for part, sound in zip(parts, flags, strict=True):
                if sound:
                    continue
                for name, b in part:
                    if not bool(torch.isfinite(b).all()):
                        found[name] = "non-finite values"
                    elif _is_variance(name) and not bool((b > 0).all()):
                        found[name] = "running variance not positive"
    return found


def _parameter(slot: Slot) -> Optional[torch.Tensor]:
    """The parameter a slot names (None if it is a buffer or plain attribute), read without hooks or properties."""
    return slot.module.__dict__["_parameters"].get(slot.attr)


def build_report(
    model: nn.Module,
    ghn: GHN,
    graph: Graph,
    result: Mapping[str, tuple[Slot, Any]],
    seconds: Mapping[str, float],
    *,
    plan: Optional[Plan] = None,
    predict_classifier: bool = True,
) -> Report:
    """Describe what a prediction writes into ``model``: every parameter is either predicted or left alone, with why.

    Args:
        model: the model.
        ghn: the GHN that predicts.
        graph: the model's graph.
        result: {tensor name: (slot, value)} of the tensors that will be written (values are not read).
        seconds: timings to carry (``{"load": ..., "trace": ...}``).
        plan: the plan the prediction followed; with ``predict_classifier=False`` it tells which tensors
            are the classifier's.
        predict_classifier: whether the classifier was predicted.

    Returns:
        The :class:`Report`.
    """
    rep = Report(
        model=model_name(model),
        ghn=ghn_name(ghn),
        ghn_kind=ghn.config.kind,
        tracer=graph.tracer,
        nodes=len(graph.nodes),
        seconds=dict(seconds),
        notes=list(graph.notes),
        suspect_buffers=suspect_buffers(model),
    )
    by_tensor = {id(_parameter(slot)): name for name, (slot, _) in result.items()}
    graph_names = {n.name: n.published_name for n in graph.nodes if n.is_param}
    classifier: set[int] = set()
    if plan is not None and not predict_classifier:
        slots = plan.slots()
        classifier = {id(_parameter(slots[name])) for name in plan.classifier()}
    # biases of norm layers whose weight node exists but was not written
    norm_biases = {n.name[: -len("weight")] + "bias" for n in graph.nodes if n.type in ("bn", "ln")}
    unwritten_norm_biases = norm_biases - set(result)
    owners = parameter_owners(model)  # id(tensor) -> every (name, module): tied weights have several
    executed = getattr(graph, "executed", frozenset())
    for name, p in walk.named_tensors(model, "_parameters"):
        rep.numel_total += p.numel()
        if id(p) in by_tensor:
            rep.predicted.append(name)
            rep.numel_predicted += p.numel()
        elif id(p) in classifier:
            rep.left_alone[name] = CLASSIFIER_KEPT
        else:
            pairs = owners.get(id(p), [(name, model)])
            module, aliases = pairs[0][1], [alias for alias, _ in pairs]
            used = not graph.recorded or any(a in graph.recorded for a in aliases)
            ran = any(a in executed for a in aliases)
            rep.left_alone[name] = why_left_alone(name, module, used, graph_names, unwritten_norm_biases, ran=ran)
    return rep
