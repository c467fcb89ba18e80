"""Fine-tune models from several init schemes under identical conditions and collect the results."""

from __future__ import annotations

import copy
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..recalibrate import recalibrate_bn
from ..report import Report
from ..schemes import SchemeReport
from .data import Data, get_batch, load_data
from .models import ModelSpec, build_model
from .schemes import Scheme, call_scheme, resolve_schemes

__all__ = ["Run", "Results", "compare", "evaluate", "OPTIMIZERS", "SCHEDULES"]

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


# config entries that define how runs were fine-tuned and tested: results only merge when these agree
RECIPE_KEYS = (
    "data",
    "steps",
    "optimizer",
    "lr",
    "weight_decay",
    "schedule",
    "batch_size",
    "image_size",
    "num_classes",
    "eval_at",
    "recalibrate_bn",
    "calibration_images",
    "loss_window",
)
# config entries that list what was run: merging takes their union, in order of appearance
_UNION_KEYS = ("models", "inits", "seeds")


@dataclass
class Run:
    """One model fine-tuned from one scheme with one seed."""

    model: str
    scheme: str
    seed: int
    steps: list[int]  # checkpoints
    test_acc: list[float]  # at each checkpoint
    train_loss: list[float]  # mean over the LOSS_WINDOW steps before each checkpoint (step 0: step-0 loss)
    step0_loss: float  # loss of the first batch before any update
    loss_curve: list[float]  # every step
    seconds: float  # wall time: building, initializing, training and evaluating
    init_seconds: float  # of which the init scheme
    report: Optional[dict] = None  # what ghn_init.apply reported, for GHN schemes


@dataclass
class Results:
    """Everything :func:`compare` measured; ``save`` writes results.json, results.md and curves.png."""

    config: dict
    runs: list[Run] = field(default_factory=list)

    def select(self, model: Optional[str] = None, scheme: Optional[str] = None) -> list[Run]:
        return [r for r in self.runs if (model is None or r.model == model) and (scheme is None or r.scheme == scheme)]

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(r.model for r in self.runs))

    @property
    def schemes(self) -> list[str]:
        return list(dict.fromkeys(r.scheme for r in self.runs))

    def summary(self) -> list[dict[str, Any]]:
        """Per model and scheme: mean and sample standard deviation over seeds of every metric."""
        rows = []
        for m in self.models:
            for s in self.schemes:
                runs = self.select(m, s)
                if not runs:
                    continue
                row: dict[str, Any] = {"model": m, "scheme": s, "seeds": [r.seed for r in runs], "steps": runs[0].steps}
                row["test_acc"] = [_mean_sd([r.test_acc[i] for r in runs]) for i in range(len(runs[0].steps))]
                row["train_loss"] = [_mean_sd([r.train_loss[i] for r in runs]) for i in range(len(runs[0].steps))]
                row["step0_loss"] = _mean_sd([r.step0_loss for r in runs])
                row["seconds"] = _mean_sd([r.seconds for r in runs])
                rows.append(row)
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config, "summary": self.summary(), "runs": [asdict(r) for r in self.runs]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Results:
        return cls(dict(d["config"]), [Run(**r) for r in d["runs"]])

    @classmethod
    def merge(cls, parts: Iterable[Union[Results, Mapping[str, Any]]]) -> Results:
        """Join the results of :func:`compare` calls that split models, schemes or seeds between processes.

        Args:
            parts: :class:`Results` (or their ``to_dict()``) of runs with the same recipe: every ``config``
                entry in :data:`RECIPE_KEYS` must agree, or the table would compare unequal fine-tuning.

        Returns:
            One :class:`Results`: the first part's config, its models, schemes and seeds the union of every
            part's, and all runs in order.

        Raises:
            ValueError: no parts, or two parts ran different recipes (the message names the entry).

        Example:
            >>> with multiprocessing.Pool(2) as pool:  # doctest: +SKIP
            ...     parts = pool.map(run_one_model, ["resnet18", "small_vit"])  # each returns compare(...).to_dict()
            >>> Results.merge(parts).save("out")  # doctest: +SKIP
        """
        loaded = [p if isinstance(p, Results) else cls.from_dict(p) for p in parts]
        if not loaded:
            raise ValueError("no results to merge")
        first = loaded[0]
        merged = cls(dict(first.config), list(first.runs))
        for part in loaded[1:]:
            for key in RECIPE_KEYS:
                if part.config.get(key) != first.config.get(key):
                    raise ValueError(
                        f"cannot merge results run with different {key!r}: "
                        f"{first.config.get(key)!r} vs {part.config.get(key)!r}; rerun them with one recipe"
                    )
            merged.runs += part.runs
        for key in _UNION_KEYS:
            merged.config[key] = list(dict.fromkeys(v for p in loaded for v in p.config.get(key, [])))
        return merged

    def markdown(self, plot: Optional[str] = "curves.png") -> str:
        """The mean ± sd table with the setup above it; ``plot`` names an image to link (None: none)."""
        from .render import markdown

        return markdown(self, plot)

    def save(self, out: Union[str, os.PathLike[str]], plot: bool = True) -> dict[str, str]:
        """Write ``results.json``, ``results.md`` and (with matplotlib) ``curves.png`` into ``out``."""
        from .render import save

        return save(self, out, plot)


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, sd


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
    data: Union[str, Data, tuple] = "digits",
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
    device: Union[str, torch.device] = "cpu",
    progress: bool = True,
    download: bool = False,
    out: Optional[str] = None,
) -> Results:
    """Fine-tune every model from every init scheme with every seed and measure test accuracy and loss.

    Fair by construction: for one model and seed, every scheme starts from the same freshly built
    model (same default values for every tensor the scheme leaves alone), sees the same batches in
    the same order and the same dropout draws, with the same optimizer and schedule.

    Args:
        models: names (``resnet18``, ``timm/NAME``, ``small_vit``), callables returning a model, or a
            comma-separated string of names.
        inits: scheme names (``default``, ``orthogonal``, ``ghn:SOURCE[+POSTPROCESS]``), callables
            ``(model) -> None`` (a ``Report`` they return is kept), a dict name -> either, or a
            comma-separated string.
        data: ``digits``, an image folder, ``torchvision:NAME[:ROOT]``, a :class:`Data` or a
            ``(train, test)`` pair of datasets.
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
        device: where models train.
        progress: tqdm progress bars over runs and steps (if tqdm is installed).
        download: let torchvision download a ``torchvision:NAME`` dataset.
        out: if given, also :meth:`Results.save` there.

    Returns:
        :class:`Results`.

    Raises:
        ValueError: bad names or numbers, before any training.

    Example:
        >>> inits = "default,orthogonal,ghn:bundled"
        >>> results = ghn_init.compare("resnet18", inits, "digits", steps=50, seeds=2)  # doctest: +SKIP
        >>> print(results.markdown())  # doctest: +SKIP
    """
    model_specs = [m for m in models.split(",") if m.strip()] if isinstance(models, str) else list(models)
    if not model_specs:
        raise ValueError("no model given; e.g. resnet18,mobilenet_v3_small")
    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seed_list:
        raise ValueError("no seed given")
    if steps < 1 or batch_size < 1 or image_size < 1 or lr <= 0 or calibration_images < 1:
        raise ValueError("steps, batch_size, image_size, calibration_images and lr must be positive")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; use one of {', '.join(OPTIMIZERS)}")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; use one of {', '.join(SCHEDULES)}")
    checkpoints = sorted({int(s) for s in (eval_at or (0, steps // 8, steps // 4, steps // 2, steps))} | {steps})
    if checkpoints[0] < 0 or checkpoints[-1] > steps:
        raise ValueError(f"eval_at must lie in [0, {steps}], got {checkpoints}")
    schemes = resolve_schemes(inits)
    dataset = load_data(data, image_size, download=download)
    classes = num_classes or dataset.num_classes
    device = torch.device(device)
    calibration = None
    if recalibrate:
        n = min(calibration_images, len(dataset.train))
        calibration = get_batch(dataset.train, torch.arange(n))[0]

    config = {
        "models": [_model_name(m) for m in model_specs],
        "inits": list(schemes),
        "data": dataset.describe(),
        "steps": steps,
        "seeds": seed_list,
        "optimizer": optimizer,
        "lr": lr,
        "weight_decay": weight_decay,
        "schedule": schedule,
        "batch_size": batch_size,
        "image_size": image_size,
        "num_classes": classes,
        "eval_at": checkpoints,
        "recalibrate_bn": recalibrate,
        "calibration_images": len(calibration) if calibration is not None else 0,
        "loss_window": LOSS_WINDOW,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    results = Results(config)
    tqdm = _tqdm(progress)
    total = len(model_specs) * len(seed_list) * len(schemes)
    with tqdm(total=total, desc="runs", unit="run", disable=not progress) as bar:
        for spec in model_specs:
            for seed in seed_list:
                for name, scheme in schemes.items():
                    bar.set_postfix_str(f"{_model_name(spec)} {name} seed {seed}")
                    run = _one_run(
                        spec, name, scheme, seed, dataset, classes, config, calibration, device, tqdm, progress
                    )
                    results.runs.append(run)
                    bar.update(1)
    if out is not None:
        results.save(out)
    return results


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


def _one_run(spec, name, scheme, seed, dataset, classes, config, calibration, device, tqdm, progress) -> Run:
    started = time.perf_counter()
    torch.manual_seed(seed)
    model = (build_model(spec, classes, config["image_size"]) if isinstance(spec, str) else spec()).to(device)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    size = (3, config["image_size"], config["image_size"])
    report = call_scheme(scheme, model, input_size=size)
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
                accs[step] = evaluate(model, dataset.test, calibration)
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
    )
