"""The public pipeline: ``trace -> plan -> predict -> write``, and ``apply`` (= predict + write).

graph = ghn_init.trace(model)                        # stage 1: the model's GHN graph
plan = ghn_init.plan(graph, model, ghn.config.max_shape)  # stage 2: node -> tensor
prediction = ghn_init.predict(model, ghn)            # stages 1-3: predicted tensors, model untouched
prediction.report                                    # what will be written, what is left alone, why
prediction.write()                                   # stage 4: all or nothing, in place
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Union, overload

import torch
import torch.nn as nn

from .errors import InvalidArgumentError, InvalidArgumentTypeError, StrictError, listed
from .graph import TRACERS, Graph, trace, unwrap
from .graph.autograd_trace import any_tensor, exclusive_all
from .graph.program import is_exported_program, program_module
from .graph.walk import shared_walks
from .hub import GHNSource, load_ghn
from .hub.copies import inference_copy
from .networks import GHN
from .planning import Plan, Slot, plan
from .postprocess import PostProcess, postprocess_predictions
from .report import Report, build_report
from .validation import (
    check_choice,
    check_example_inputs,
    check_example_kwargs,
    check_flag,
    check_generator,
    check_ghn_source,
    check_input_size,
    check_models,
)
from .writing import check_fits, write_tensors


@dataclass
class Prediction:
    """Predicted tensors for one model, not yet written (the output of :func:`predict`).

    Attributes:
        model: the model the tensors are for.
        graph: its GHN graph.
        plan: which node predicts which tensor.
        tensors: {tensor name: (slot, predicted value)}, values in the GHN's dtype and device.
        report: what :meth:`write` will write and what stays at default init, with reasons.
        dry_run: made by ``predict(..., dry_run=True)``: every tensor was predicted and checked, none kept
            (``tensors`` is empty and :meth:`write` refuses).
    """

    model: nn.Module
    graph: Graph
    plan: Plan
    tensors: dict[str, tuple[Slot, torch.Tensor]]
    report: Report
    dry_run: bool = False

    def write(self) -> Report:
        """Write the predicted tensors into the model in place, all or nothing (see :func:`write`)."""
        return write([self])[0]


def write(predictions: Sequence[Prediction]) -> list[Report]:
    """Write predictions into their models, all or nothing, and return their reports.

    Every value is checked and converted to its target's dtype, device and memory layout before the
    first write; then each tensor's ``.data`` is swapped (the same ``nn.Parameter`` objects stay, so an
    optimizer built earlier still works). If anything fails, every tensor is as it was. Writes into the
    same model from several threads take turns (its recording lock), so each leaves one prediction whole.

    Args:
        predictions: from :func:`predict`.

    Returns:
        The reports, with the write time filled in.

    Raises:
        WriteError: a predicted tensor does not fit its target, or a swap failed; nothing was written.
        PredictionError: predicted values are not finite in their target's dtype (e.g. float16 overflow,
            ``.names`` lists them); nothing was written.

    Example:
        >>> import ghn_init, torchvision
        >>> p = ghn_init.predict(torchvision.models.resnet18(), "bundled", postprocess="none")
        >>> ghn_init.write([p])[0].fraction_predicted
        1.0
    """
    if not isinstance(predictions, (list, tuple)):
        one = isinstance(predictions, Prediction)
        raise InvalidArgumentTypeError(
            f"write() takes a list of predictions from ghn_init.predict(), got {type(predictions).__name__}"
            + ("; pass [prediction] or call prediction.write()" if one else ""),
            argument="predictions",
            value=predictions,
        )
    for p in predictions:
        if not isinstance(p, Prediction):
            raise InvalidArgumentTypeError(
                f"write() takes a list of predictions from ghn_init.predict(), got {type(p).__name__}",
                argument="predictions",
                value=p,
            )
        if p.dry_run:
            raise InvalidArgumentError(
                "a dry-run prediction keeps no tensors to write; call predict() without dry_run=True",
                argument="predictions",
                value=p,
            )
    start = time.perf_counter()
    with exclusive_all([p.model for p in predictions]):  # writes into one model take turns, so none can mix
        write_tensors([p.tensors for p in predictions])
    seconds = (time.perf_counter() - start) / max(len(predictions), 1)
    for p in predictions:
        p.report.seconds["write"] = seconds
    return [p.report for p in predictions]


FROZEN_KEPT = "frozen (requires_grad=False), kept as it is; pass predict_frozen=True to predict it"


def _frozen(result: Mapping[str, tuple[Slot, Any]]) -> set[str]:
    """The names in ``result`` whose model tensor is a parameter that does not require grad."""
    frozen = set()
    for name, (slot, _) in result.items():
        t = slot.tensor
        if isinstance(t, nn.Parameter) and not t.requires_grad:
            frozen.add(name)
    return frozen


def _refuse_meta(model: nn.Module) -> None:
    """Refuse a model with tensors on the meta device, all of them or only some: there is nothing to write into,
    and reporting them as predicted would be false (only the first parameter's device used to be read, so a
    partly-meta model was reported as 100% predicted with nothing written).
    """
    if not any_tensor(model, lambda t: t.is_meta):
        return
    named = [*model.named_parameters(), *model.named_buffers()]
    on_meta = [name for name, t in named if t.device.type == "meta"]
    if not on_meta:
        return
    shown = listed(on_meta, 3)
    if len(on_meta) == len(named):
        what = f"all {len(named)} tensors of {type(model).__name__} are on the meta device ({shown})"
        fix = "materialize it first, e.g. model.to_empty(device='cpu'), then call again"
    else:
        what = f"{type(model).__name__} has {len(on_meta)} of its {len(named)} tensors on the meta device ({shown})"
        fix = "materialize them first (e.g. model.to_empty(device='cpu') and initialize, or load their values)"
    raise InvalidArgumentError(
        f"{what}, so they have no storage to write into; {fix}, or check a prediction without writing: "
        "predict(..., dry_run=True)",
        argument="model",
        value=on_meta,
    )


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


@overload
def predict(model: nn.Module, ghn: GHNSource = ..., **kwargs) -> Prediction: ...
@overload
def predict(model: Sequence[nn.Module], ghn: GHNSource = ..., **kwargs) -> list[Prediction]: ...
def predict(
    model: Union[nn.Module, Sequence[nn.Module]],
    ghn: GHNSource = None,
    *,
    predict_classifier: bool = True,
    strict: bool = False,
    input_size: Optional[Sequence[int]] = None,
    example_inputs: Optional[Sequence[Any]] = None,
    example_kwargs: Optional[Mapping[str, Any]] = None,
    dry_run: bool = False,
    postprocess: Union[str, PostProcess, None] = "default",
    generator: Optional[torch.Generator] = None,
    tracer: str = "auto",
    predict_frozen: bool = False,
) -> Union[Prediction, list[Prediction]]:
    """Predict a model's parameters with a GHN without changing the model (stages trace, plan, predict).

    Args:
        model: an ``nn.Module``, or a list of them (one batched GHN forward pass for all).
        ghn: a loaded :class:`GHN`, a registry name, a local path, an ``hf://`` source, ``"bundled"``,
            or None for the default GHN (see :func:`load_ghn`).
        predict_classifier: also predict the last (classification) layer; False keeps its default init.
        strict: raise :class:`StrictError` if any trainable tensor would keep its default init.
        input_size: ``(C, H, W)`` to record the model with (default: read from the model).
        example_inputs: positional arguments to record the model with instead of a zero image batch
            (e.g. RAFT's two images); see :func:`trace`.
        example_kwargs: keyword arguments to record the model with (e.g. ``{"pixel_values": x}``).
        dry_run: predict and check every tensor (shape, finite values) but keep none: the memory of one
            tensor at a time, so models built on the meta device work (the GHN then runs on its own device).
            The report is complete; the prediction cannot be written.
        postprocess: what to do to the predictions (:mod:`ghn_init.postprocess`): ``"default"`` is the
            GHN's recommendation (its config's ``postprocess``; a published checkpoint loaded from its
            file has none and keeps its exact predictions); ``"none"``/None keeps them as predicted;
            or parts of :data:`ghn_init.postprocess.POSTPROCESS_PARTS` (``"orth"``, ``"noise"``, ``"dcbalance"``,
            ``"detile"``, ``"keepnorm"``, ``"nohead"``, ...) joined by ``+`` (:meth:`ghn_init.PostProcess.parse`).
            Only the drops apply in a dry run.
        generator: CPU ``torch.Generator`` for the noise, ``detile``'s values and the class-token row of a
            predicted position embedding, so that one seed gives the same tensors on every call (default:
            torch's global RNG).
        tracer: ``"auto"``, ``"autograd"`` or ``"fx"`` (see :func:`trace`). A
            :class:`torch.export.ExportedProgram` is accepted as a model: it is read with fx and its
            tensors are those of ``ep.state_dict`` (``Prediction.model`` is
            :func:`~ghn_init.graph.program.program_module` of it).
        predict_frozen: also predict parameters with ``requires_grad=False`` (a frozen pretrained backbone);
            by default they keep their values and the report lists them as frozen.

    Returns:
        A :class:`Prediction` (a list of them for a list of models). Call ``.write()`` to write it.

    Raises:
        TraceError: the model could not be recorded.
        StrictError: with ``strict=True``, some trainable tensors are not predicted (``.missing``).
        PredictionError: the GHN predicted non-finite values.
        InvalidArgumentError: a bad argument (named by ``.argument``); among them, models on different devices,
            or a model with some or all of its tensors on the meta device without ``dry_run``.

    Example:
        >>> import ghn_init, torchvision
        >>> p = ghn_init.predict(torchvision.models.resnet18(), "bundled", postprocess="none")
        >>> len(p.tensors), p.report.fraction_predicted
        (62, 1.0)
    """
    return _predict(
        model,
        ghn,
        predict_classifier=predict_classifier,
        strict=strict,
        input_size=input_size,
        example_inputs=example_inputs,
        example_kwargs=example_kwargs,
        dry_run=dry_run,
        postprocess=postprocess,
        generator=generator,
        tracer=tracer,
        predict_frozen=predict_frozen,
    )


def _predict(
    model: Union[nn.Module, Sequence[nn.Module]],
    ghn: GHNSource,
    *,
    predict_classifier: bool,
    strict: bool,
    input_size: Optional[Sequence[int]],
    example_inputs: Optional[Sequence[Any]],
    example_kwargs: Optional[Mapping[str, Any]],
    dry_run: bool,
    postprocess: Union[str, PostProcess, None],
    generator: Optional[torch.Generator],
    tracer: str,
    predict_frozen: bool,
    defer_tiling: bool = False,
) -> Union[Prediction, list[Prediction]]:
    """:func:`predict`; with ``defer_tiling`` (``apply``, which writes the predictions at once), predictions that
    are written unchanged (no post-processing) keep large tiled tensors as :class:`~ghn_init.tiling.Tiled`, for
    :func:`write` to tile into the model's own tensors."""
    check_models(model, is_exported_program)
    check_ghn_source(ghn, GHN)
    check_flag("predict_classifier", predict_classifier)
    check_flag("strict", strict)
    check_flag("dry_run", dry_run)
    check_flag("predict_frozen", predict_frozen)
    check_input_size(input_size)
    check_example_inputs(example_inputs)
    check_example_kwargs(example_kwargs)
    check_generator(generator)
    check_choice("tracer", tracer, TRACERS)
    sources = list(model) if isinstance(model, (list, tuple)) else [model]
    models = [program_module(m) if is_exported_program(m) else m for m in sources]
    models = [unwrap(m) for m in models]  # torch.compile'd models: the module they wrap (same tensors)
    # The models' locks are held from the first read of their tensors to the last: a recording in another thread
    # puts meta stand-ins into a model for a while, and a meta check or device read meanwhile saw those.
    # One walk of each model's modules serves every stage (nothing adds or removes modules meanwhile).
    with exclusive_all(models), shared_walks():
        if not dry_run:
            for m in models:
                _refuse_meta(m)
        device = _model_device(models[0])
        devices = [str(_model_device(m)) for m in models]
        if any(d != str(device) for d in devices):
            raise InvalidArgumentError(
                f"the models passed to one call are on different devices ({', '.join(sorted(set(devices)))}); move "
                "them to one with .to(device), or make one call per device",
                argument="model",
                value=devices,
            )
        start = time.perf_counter()
        net = load_ghn(ghn)  # a GHN instance is returned as is
        if any(t.is_meta for t in net.state_dict().values()):  # it failed in the GHN copy with NotImplementedError
            raise InvalidArgumentError(
                "the GHN's weights are on the meta device (e.g. load_ghn(..., device='meta')), so it cannot "
                "predict; pass the GHN itself, load_ghn(source); a model on the meta device is fine with "
                "predict(..., dry_run=True)",
                argument="ghn",
                value="meta",
            )
        loaded = time.perf_counter()
        pp = PostProcess.parse(net.config.postprocess if postprocess == "default" else postprocess)

        graphs: list[Graph] = []
        plans: list[Plan] = []
        for source, m in zip(sources, models, strict=True):
            graph = trace(
                source,
                input_size,
                example_inputs=example_inputs,
                example_kwargs=example_kwargs,
                virtual_edge_cutoff=net.virtual_edge_cutoff,
                tracer=tracer,
            )
            graphs.append(graph)
            plans.append(plan(graph, m, net.config.max_shape))
        traced = time.perf_counter()

        slots = [p.slots(predict_classifier) for p in plans]

        def check(b: int, name: str, value: torch.Tensor) -> None:
            check_fits(name, slots[b][name], value)

        # An eval-mode copy on the model's device (a dry run stays on the GHN's own device): the shared GHN
        # itself is never moved or mode-switched, so concurrent calls and later calls see it as it was.
        runner = inference_copy(net, None if dry_run else device)
        with torch.no_grad():
            tensors = runner(
                graphs,
                plans,
                predict_classifier=predict_classifier,
                sink=check if dry_run else None,
                generator=generator,
                defer_tiling=defer_tiling and pp.is_identity and not dry_run,
            )
        results = [{name: (slots[b][name], t) for name, t in out.items()} for b, out in enumerate(tensors)]
        if dry_run:
            # No values were kept; which tensors post-processing would drop follows from names and shapes alone.
            shaped = [{n: (s, torch.empty(s.shape, device="meta")) for n, s in ms.items()} for ms in slots]
            raw_names = [set(r) for r in shaped]
            names_only = pp.drops_only()
            written = [
                postprocess_predictions(m, r, names_only, classifier=p.classifier())
                for m, r, p in zip(models, shaped, plans, strict=True)
            ]
        else:
            raw_names = [set(r) for r in results]
            with torch.no_grad():
                block = net.config.max_shape[:2]
                written = results = [
                    postprocess_predictions(m, r, pp, generator, classifier=p.classifier(), block=block)
                    for m, r, p in zip(models, results, plans, strict=True)
                ]
        # Frozen parameters (requires_grad=False: a pretrained backbone) keep their values unless asked for.
        frozen = [
            set() if predict_frozen or is_exported_program(src) else _frozen(r)
            for src, r in zip(sources, written, strict=True)
        ]
        for names, kept in zip(frozen, written, strict=True):
            for name in names:
                del kept[name]
        predicted_at = time.perf_counter()

        n = len(models)
        seconds = {"load": loaded - start, "trace": (traced - loaded) / n, "predict": (predicted_at - traced) / n}
        predictions = [
            Prediction(
                m,
                g,
                p,
                r,
                build_report(m, net, g, w, seconds=seconds, plan=p, predict_classifier=predict_classifier),
                dry_run,
            )
            for m, g, p, r, w in zip(models, graphs, plans, results, written, strict=True)
        ]
        for pred, before, kept, skipped in zip(predictions, raw_names, written, frozen, strict=True):
            pred.report.postprocess = str(pp)
            for name in before - set(kept):
                if name in skipped:
                    pred.report.left_alone[name] = FROZEN_KEPT
                elif name in pred.report.left_alone:
                    pred.report.left_alone[name] = f"left at the model's init by post-processing ({pp})"
        if strict:
            for pred in predictions:
                trainable = {name for name, t in pred.model.named_parameters() if t.requires_grad}
                missing = sorted(set(pred.report.left_alone) & trainable)
                if missing:
                    raise StrictError(
                        f"{pred.report.model}: {len(missing)} trainable tensors are not predicted by the GHN "
                        f"(e.g. {', '.join(missing[:5])}); pass strict=False to keep their default init",
                        model=pred.report.model,
                        missing=missing,
                    )
        return predictions if isinstance(model, (list, tuple)) else predictions[0]


@overload
def apply(model: nn.Module, ghn: GHNSource = ..., **kwargs) -> Report: ...
@overload
def apply(model: Sequence[nn.Module], ghn: GHNSource = ..., **kwargs) -> list[Report]: ...
def apply(
    model: Union[nn.Module, Sequence[nn.Module]],
    ghn: GHNSource = None,
    *,
    predict_classifier: bool = True,
    strict: bool = False,
    input_size: Optional[Sequence[int]] = None,
    example_inputs: Optional[Sequence[Any]] = None,
    example_kwargs: Optional[Mapping[str, Any]] = None,
    postprocess: Union[str, PostProcess, None] = "default",
    generator: Optional[torch.Generator] = None,
    tracer: str = "auto",
    data: Any = None,
    predict_frozen: bool = False,
) -> Union[Report, list[Report]]:
    """Initialize ``model`` (or a list of models) with parameters predicted by a GHN, in place.

    The GHN runs on the model's device and each tensor keeps its dtype. Either every predicted tensor is
    written or, if anything fails, none is. ``apply(m, ghn)`` writes what ``predict(m, ghn).write()``
    writes, without making large tiled tensors first: they are tiled straight into the model's own
    tensors once everything else is written (:func:`ghn_init.writing.write_tensors`).

    Args:
        model: an ``nn.Module``, or a list of them (one batched GHN forward pass for all).
        ghn: a loaded :class:`GHN`, a registry name, a local path, an ``hf://`` source, ``"bundled"``,
            or None for the default GHN (see :func:`load_ghn`).
        predict_classifier: also predict the last (classification) layer; False keeps its default init.
        strict: raise :class:`StrictError`, before writing anything, if a trainable tensor is not predicted.
        input_size: ``(C, H, W)`` to record the model with (default: read from the model).
        example_inputs: positional arguments to record the model with instead of a zero image batch
            (e.g. RAFT's two images); see :func:`trace`.
        example_kwargs: keyword arguments to record the model with (e.g. ``{"pixel_values": x}``).
        postprocess: post-processing of the predictions before writing (see :func:`predict`); the
            default is the GHN's recommendation.
        generator: CPU ``torch.Generator`` for post-processing's random draws (noise, ``detile``) and a position
            embedding's class-token row (see :func:`predict`).
        tracer: ``"auto"``, ``"autograd"`` or ``"fx"`` (see :func:`trace`); an ExportedProgram's
            predictions are written into the tensors of its ``state_dict``.
        data: a batch of the user's inputs, an ``(inputs, labels)`` pair or a ``DataLoader``: calibrate the written
            predictions on it (:func:`ghn_init.calibrate.calibrate`: each predicted layer's output scale, the
            classifier's logit scale with labels, BatchNorm statistics); ``Report.calibration`` lists the changes.
            None (default): no calibration.
        predict_frozen: also write parameters with ``requires_grad=False`` (a frozen pretrained backbone); by
            default they keep their values and ``Report.left_alone`` lists them as frozen.

    Returns:
        A :class:`Report` per model: what was predicted, what kept its default init and why, timings.

    Raises:
        TraceError, StrictError, PredictionError, WriteError: see :func:`predict` and :func:`write`;
        the model is unchanged whenever one is raised.

    Example:
        >>> import ghn_init, torchvision
        >>> model = torchvision.models.resnet18()
        >>> report = ghn_init.apply(model, "bundled", postprocess="none")  # raw predictions, every tensor
        >>> report.fraction_predicted
        1.0
    """
    if data is not None:
        from .calibrate import check_data

        check_models(model, is_exported_program)
        check_data(data)  # before the prediction: bad data costs nothing
    predictions = _predict(
        model,
        ghn,
        predict_classifier=predict_classifier,
        strict=strict,
        input_size=input_size,
        example_inputs=example_inputs,
        example_kwargs=example_kwargs,
        dry_run=False,
        postprocess=postprocess,
        generator=generator,
        tracer=tracer,
        predict_frozen=predict_frozen,
        defer_tiling=data is None,  # written at once: large tiled tensors go straight into the model
    )
    if data is not None:
        from .calibrate import calibrated_write

        reports = calibrated_write([predictions] if isinstance(predictions, Prediction) else predictions, data)
        return reports[0] if isinstance(predictions, Prediction) else reports
    if isinstance(predictions, Prediction):
        return write([predictions])[0]
    return write(predictions)
