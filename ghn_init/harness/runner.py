"""Fine-tune models from several init schemes under identical conditions and collect the results."""

from __future__ import annotations

import copy
import math
import platform
import time
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import InvalidArgumentError
from ..hub.copies import parse_device
from ..outputs import check_output_folder, clear_outputs
from ..recalibrate import recalibrate_bn
from ..report import Report
from ..schemes import SchemeReport
from ..validation import check_choice, check_finite, check_flag, check_positive_int, check_seed
from .data import Data, get_batch, load_data, per_class_subset
from .models import ModelSpec, build_model
from .render import RESULT_FILES
from .results import RECIPE_KEYS, Failure, Results, Run
from .schemes import Scheme, call_scheme, resolve_schemes

__all__ = ["Run", "Results", "Failure", "RECIPE_KEYS", "compare", "evaluate", "OPTIMIZERS", "SCHEDULES"]

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("constant", "cosine", "onecycle")
LOSS_WINDOW = 10  # training loss at a checkpoint: mean of the steps before it

# The default fine-tuning recipe, shared with ``ghn-init compare``: SGD with Nesterov momentum and a
# one-cycle schedule (warm-up, then annealing), as a practitioner fine-tunes for a few hundred steps.
# Chosen on default-init runs alone: with it a small ViT learns on digits in 200 steps (75.8 +- 3.5%,
# seeds 0-4), where AdamW at a constant 1e-3 left it at 26-36% with seed-to-seed spreads of 7-17
# points, too noisy for 3 seeds to rank init schemes (docs/init_quality.md).
DEFAULT_OPTIMIZER = "sgd"
DEFAULT_LR = 0.02
DEFAULT_WEIGHT_DECAY = 5e-4
DEFAULT_SCHEDULE = "onecycle"
DEFAULT_BATCH_SIZE = 32


@torch.no_grad()
def evaluate(model: nn.Module, test, calibration: Optional[torch.Tensor] = None, batch_size: int = 256) -> float:
    """Eval-mode test accuracy of ``model``; with ``calibration`` inputs, of a copy whose BatchNorm
    statistics are re-estimated on them first (:func:`ghn_init.recalibrate_bn`). The model is not changed."""
    device = next(model.parameters()).device
    if calibration is not None:
        model = recalibrate_bn(copy.deepcopy(model), calibration.to(device))
    was_training = model.training
    model.eval()
    correct = 0
    try:
        for start in range(0, len(test), batch_size):
            x, y = get_batch(test, torch.arange(start, min(start + batch_size, len(test))))
            correct += (model(x.to(device)).argmax(1).cpu() == y).sum().item()
    finally:
        model.train(was_training)
    return correct / len(test)


def _optimizer(name: str, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; use one of {', '.join(OPTIMIZERS)}")


def _schedule(name: str, optimizer: torch.optim.Optimizer, steps: int):
    if name == "constant":
        return None
    if name == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
        )
    if name == "onecycle":
        lr = optimizer.param_groups[0]["lr"]
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(steps, 2))
    raise ValueError(f"unknown schedule {name!r}; use one of {', '.join(SCHEDULES)}")


def _model_name(spec: ModelSpec) -> str:
    return spec if isinstance(spec, str) else getattr(spec, "__name__", type(spec).__name__)


def _report_dict(report: Any) -> Optional[dict]:
    """A scheme's return value as JSON data: a Report or SchemeReport through ``to_dict()``, anything else by repr."""
    if report is None:
        return None
    return report.to_dict() if isinstance(report, (Report, SchemeReport)) else {"value": repr(report)}


def compare(
    models: Union[str, Sequence[ModelSpec]],
    inits: Union[
        str, Sequence[Union[str, Scheme]], Mapping[str, Union[str, Scheme]]
    ] = "default,orthogonal,ghn:bundled",
    data: Union[str, Data, tuple, Sequence[Union[str, Data]]] = "digits",
    *,
    steps: int = 200,
    seeds: Union[int, Sequence[int]] = (0, 1, 2),
    optimizer: str = DEFAULT_OPTIMIZER,
    lr: float = DEFAULT_LR,
    weight_decay: float = DEFAULT_WEIGHT_DECAY,
    schedule: str = DEFAULT_SCHEDULE,
    batch_size: int = DEFAULT_BATCH_SIZE,
    image_size: int = 32,
    num_classes: Optional[int] = None,
    eval_at: Optional[Sequence[int]] = None,
    recalibrate: bool = True,
    calibration_images: int = 512,
    per_class: Optional[int] = None,
    reference: Optional[str] = None,
    device: Union[str, torch.device] = "cpu",
    progress: bool = True,
    download: bool = False,
    out: Optional[str] = None,
    overwrite: bool = False,
) -> Results:
    """Fine-tune every model from every init scheme with every seed (on every dataset) and measure test accuracy
    and loss.

    Fair by construction: for one dataset, model and seed, every scheme starts from the same freshly built model
    (same default values for every tensor the scheme leaves alone), gets the same data (the same few-shot subset,
    the same calibration batch for data-aware schemes), sees the same batches in the same order and the same
    dropout draws, with the same optimizer and schedule. A scheme that does not apply to a model (it raises, e.g.
    :class:`~ghn_init.UnsupportedModelError`) is recorded in ``Results.failed`` with a one-line reason; the other
    runs go on.

    Args:
        models: names (``resnet18``, ``timm/NAME``, ``small_vit``, ``small_vgg``), callables returning a model, or a
            comma-separated string of names.
        inits: scheme names (:func:`ghn_init.list_schemes`, ``ghn:SOURCE[+POSTPROCESS][+calibrate]``), callables
            ``scheme(model, *, data=None, generator=None)`` or plain ``(model) -> None`` (what they return is kept),
            a dict name -> either, or a comma-separated string.
        data: ``digits``, ``shapes``, an image folder, ``torchvision:NAME[:ROOT]``, a :class:`Data`, a
            ``(train, test)`` pair of datasets, or several of these (a list, or names joined by commas).
        steps: optimizer steps per run.
        seeds: seeds (an int ``n`` means ``0..n-1``).
        optimizer: ``adamw``, ``adam`` or ``sgd`` (Nesterov momentum 0.9).
        lr: peak learning rate. weight_decay: its weight decay.
        schedule: ``constant``, ``cosine`` or ``onecycle``.
        batch_size: images per step. image_size: side of the input images.
        num_classes: classifier outputs (default: the data's classes).
        eval_at: checkpoints (default: 0, steps/8, steps/4, steps/2, steps).
        recalibrate: re-estimate BatchNorm statistics on ``calibration_images`` training images
            before each test (on a copy; training is untouched). A GHN predicts no running statistics
            and short runs leave them behind the weights, so this is on by default.
        calibration_images: training images (with labels) for that and for data-aware schemes (``lsuv``,
            ``ghn:...+calibrate``), the first ones of the (few-shot) training set.
        per_class: train on ``per_class`` images of each class only, a subset drawn with each seed (the same for
            every scheme of that seed): the few-shot regime, where init schemes differ most.
        reference: a scheme in ``inits`` to pair every other against (:meth:`Results.paired`, the leaderboard).
        device: where models train.
        progress: tqdm progress bars over runs and steps (if tqdm is installed).
        download: let torchvision download a ``torchvision:NAME`` dataset.
        out: if given, also :meth:`Results.save` there (checked before any work: a folder, or a path where one
            can be created).
        overwrite: replace the results of an earlier comparison in ``out`` (refused without it).

    Returns:
        :class:`Results`.

    Raises:
        InvalidArgumentError: bad names, numbers or ``out`` folder, before any training (also a ValueError).

    Example:
        >>> inits = "default,orthogonal,lsuv,ghn:bundled"
        >>> results = ghn_init.compare("resnet18", inits, "digits,shapes", steps=50, seeds=2, per_class=10,
        ...                            reference="default")  # doctest: +SKIP
        >>> print(results.markdown())  # doctest: +SKIP
    """
    model_specs = [m for m in models.split(",") if m.strip()] if isinstance(models, str) else list(models)
    if not model_specs:
        raise InvalidArgumentError("no model given; e.g. resnet18,mobilenet_v3_small", argument="models", value=models)
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        check_positive_int("seeds", seeds)  # n seeds: 0..n-1
        seed_list = list(range(seeds))
    elif isinstance(seeds, (list, tuple, range)):
        seed_list = list(seeds)
    else:
        raise InvalidArgumentError(
            f"seeds must be a count or a list of seeds, e.g. 3 or (0, 1, 2), got {seeds!r}",
            argument="seeds",
            value=seeds,
        )
    if not seed_list:
        raise InvalidArgumentError("no seed given; e.g. seeds=(0, 1, 2)", argument="seeds", value=seeds)
    for seed in seed_list:
        check_seed("seeds", seed)
    for name, value in (("steps", steps), ("batch_size", batch_size), ("image_size", image_size)):
        check_positive_int(name, value)
    check_positive_int("calibration_images", calibration_images)
    check_finite("lr", lr)
    check_finite("weight_decay", weight_decay, positive=False)
    for name, value in (("per_class", per_class), ("num_classes", num_classes)):
        if value is not None:
            check_positive_int(name, value)
    check_choice("optimizer", optimizer, OPTIMIZERS)
    check_choice("schedule", schedule, SCHEDULES)
    for name, value in (("recalibrate", recalibrate), ("progress", progress), ("download", download)):
        check_flag(name, value)
    check_flag("overwrite", overwrite)
    if eval_at is not None:
        for step in eval_at:
            if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= steps:
                raise InvalidArgumentError(
                    f"eval_at must be whole steps from 0 to steps ({steps}), got {list(eval_at)}",
                    argument="eval_at",
                    value=eval_at,
                )
    checkpoints = sorted({int(s) for s in (eval_at or (0, steps // 8, steps // 4, steps // 2, steps))} | {steps})
    if out is not None:
        check_output_folder(out, "out", existing=RESULT_FILES, overwrite=overwrite)
    schemes = resolve_schemes(inits)
    if reference is not None and reference not in schemes:
        raise InvalidArgumentError(
            f"reference scheme {reference!r} is not among the inits ({', '.join(schemes)})",
            argument="reference",
            value=reference,
        )
    if isinstance(data, str):
        specs: list = [d.strip() for d in data.split(",") if d.strip()]
    elif isinstance(data, list):
        specs = list(data)
    else:
        specs = [data]
    if not specs:
        raise InvalidArgumentError("no data given; e.g. digits,shapes", argument="data", value=data)
    device = parse_device(device)  # a device this machine lacks fails here, not after the data is loaded
    datasets = [load_data(d, image_size, download=download) for d in specs]
    if len({d.name for d in datasets}) != len(datasets):
        raise ValueError(f"datasets must have different names, got {[d.name for d in datasets]}")

    config = {
        "models": [_model_name(m) for m in model_specs],
        "inits": list(schemes),
        "data": datasets[0].describe() if len(datasets) == 1 else [d.describe() for d in datasets],
        "steps": steps,
        "seeds": seed_list,
        "optimizer": optimizer,
        "lr": lr,
        "weight_decay": weight_decay,
        "schedule": schedule,
        "batch_size": batch_size,
        "image_size": image_size,
        "num_classes": num_classes or (datasets[0].num_classes if len(datasets) == 1 else None),
        "eval_at": checkpoints,
        "recalibrate_bn": recalibrate,
        "calibration_images": min(calibration_images, min(_n_train(d, per_class) for d in datasets)),
        "loss_window": LOSS_WINDOW,
        "per_class": per_class,
        "reference": reference,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    results = Results(config)
    tqdm = _tqdm(progress)
    total = len(datasets) * len(model_specs) * len(seed_list) * len(schemes)
    with tqdm(total=total, desc="runs", unit="run", disable=not progress) as bar:
        for dataset in datasets:
            classes = num_classes or dataset.num_classes
            for seed in seed_list:
                train = per_class_subset(dataset.train, per_class, seed) if per_class else dataset.train
                seeded = Data(dataset.name, train, dataset.test, dataset.num_classes)
                n = min(calibration_images, len(train))
                calibration = get_batch(train, torch.arange(n))  # (images, labels)
                for spec in model_specs:
                    for name, scheme in schemes.items():
                        bar.set_postfix_str(f"{dataset.name} {_model_name(spec)} {name} seed {seed}")
                        run = _one_run(
                            spec, name, scheme, seed, seeded, classes, config, calibration, device, tqdm, progress
                        )
                        (results.failed if isinstance(run, Failure) else results.runs).append(run)
                        bar.update(1)
    # in the order of the arguments: dataset, model, seed, scheme (the loops run seed before model)
    names = [_model_name(m) for m in model_specs]
    order = [d.name for d in datasets]
    results.runs.sort(key=lambda r: (order.index(r.data), names.index(r.model), seed_list.index(r.seed)))
    if out is not None:
        if overwrite:
            clear_outputs(out, RESULT_FILES)  # an earlier ranks.png would otherwise outlive its results
        results.save(out)
    return results


def _n_train(dataset: Data, per_class: Optional[int]) -> int:
    return min(len(dataset.train), per_class * dataset.num_classes) if per_class else len(dataset.train)


def _tqdm(progress: bool) -> Callable[..., Any]:
    try:
        from tqdm.auto import tqdm
    except ImportError:
        tqdm = None
    if tqdm is not None and progress:
        return tqdm

    class _Quiet:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def __enter__(self) -> _Quiet:
            return self

        def __exit__(self, *exc: Any) -> None:
            pass

        def update(self, n: int = 1) -> None:
            pass

        def set_postfix_str(self, s: str) -> None:
            pass

    return _Quiet


def _one_run(
    spec, name, scheme, seed, dataset, classes, config, calibration, device, tqdm, progress
) -> Union[Run, Failure]:
    started = time.perf_counter()
    torch.manual_seed(seed)
    model = (build_model(spec, classes, config["image_size"]) if isinstance(spec, str) else spec()).to(device)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    size = (3, config["image_size"], config["image_size"])
    try:
        report = call_scheme(scheme, model, data=calibration, input_size=size)
    except Exception as e:  # the scheme does not apply to this model: this run fails, the comparison goes on
        message = " ".join(str(e).split()) or "(no message)"
        return Failure(_model_name(spec), name, seed, f"{type(e).__name__}: {message}", dataset.name)
    init_seconds = time.perf_counter() - t0
    torch.manual_seed(seed)  # dropout and other draws during training: the same for every scheme
    opt = _optimizer(config["optimizer"], model.parameters(), config["lr"], config["weight_decay"])
    sched = _schedule(config["schedule"], opt, config["steps"])
    generator = torch.Generator().manual_seed(seed)
    n_train, bs, steps = len(dataset.train), config["batch_size"], config["steps"]
    order, position = torch.randperm(n_train, generator=generator), 0
    losses: list[float] = []
    accs: dict[int, float] = {}
    model.train()
    with tqdm(
        total=steps, desc=f"{_model_name(spec)} {name} s{seed}", unit="step", leave=False, disable=not progress
    ) as bar:
        for step in range(steps + 1):
            if step in config["eval_at"]:
                accs[step] = evaluate(model, dataset.test, calibration[0] if config["recalibrate_bn"] else None)
                model.train()
            if step == steps:
                break
            if position + bs > n_train:
                order, position = torch.randperm(n_train, generator=generator), 0
            x, y = get_batch(dataset.train, order[position : position + bs])
            position += bs
            loss = F.cross_entropy(model(x.to(device)), y.to(device))
            if not torch.isfinite(loss):
                losses.append(float("nan"))
                losses.extend([float("nan")] * (steps - step - 1))
                for s in config["eval_at"]:
                    accs.setdefault(s, float("nan"))
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            losses.append(loss.item())
            bar.update(1)
    ckpts = config["eval_at"]
    window = [
        sum(losses[max(0, s - LOSS_WINDOW) : s]) / len(losses[max(0, s - LOSS_WINDOW) : s]) if s else losses[0]
        for s in ckpts
    ]
    return Run(
        model=_model_name(spec),
        scheme=name,
        seed=seed,
        steps=list(ckpts),
        test_acc=[accs[s] for s in ckpts],
        train_loss=window,
        step0_loss=losses[0],
        loss_curve=losses,
        seconds=time.perf_counter() - started,
        init_seconds=init_seconds,
        report=_report_dict(report),
        data=dataset.name,
    )
