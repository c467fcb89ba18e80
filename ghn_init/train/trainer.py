"""Train or fine-tune a GHN the way the GHN-2/GHN-3 papers do, with checkpoints that resume exactly.

Each step draws a meta-batch of architectures from a fixed pool, lets the GHN predict all of
their parameters in one forward pass, runs every predicted network on the same image batch and
backpropagates the mean cross-entropy into the GHN (AdamW, linear warmup + cosine decay,
gradient clipping, optional AMP on GPU). Several GPUs run under ``torchrun`` with
DistributedDataParallel; each rank draws its own architectures and its own shard of each batch.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ..constants import CHECKPOINT_NAME, METRICS_NAME
from ..errors import InvalidArgumentError, InvalidArgumentTypeError
from ..networks import GHN, GHNConfig
from ..outputs import check_output_folder, clear_outputs
from ..postprocess import PostProcess, postprocess_predictions
from ..validation import (
    check_choice,
    check_finite,
    check_flag,
    check_fraction,
    check_int_at_least,
    check_seed,
    check_text,
)
from .data import EpochOrder, SeededSamples, build_datasets
from .export import export_folder
from .peers import is_peer_failure, peer_failure
from .pool import ArchitecturePool

CHECKPOINT_VERSION = 1
RECENT_LOSS_WINDOW = 100  # steps averaged into the reported training loss
DEFAULT_WARMUP_STEPS = 100  # warmup of a run without warmup_steps (at most a tenth of its steps)
# Settings that may differ between a run and its resumption without changing the result.
RESUMABLE_CHANGES = frozenset(
    {"output", "progress", "num_workers", "checkpoint_every", "log_every", "eval_every", "device", "threads", "command"}
)
# Settings a resumed run may change under rules of their own (Trainer.load_checkpoint): a longer run continues a
# finished one; leaving warmup_steps out keeps the run's warmup.
SCHEDULE_SETTINGS = frozenset({"steps", "warmup_steps"})
# What a run writes in its folder, removed first by train(..., overwrite=True).
RUN_FILES = (CHECKPOINT_NAME, CHECKPOINT_NAME.rsplit(".", 1)[0] + ".tmp", METRICS_NAME, "ghn")


@dataclass
class TrainConfig:
    """Everything a training run depends on; stored in checkpoints and config.json."""

    output: str = field(metadata={"help": "run folder: checkpoint, metrics log and the exported GHN"})
    # data
    data: str = field(
        default="fractals", metadata={"help": "'fractals', a torchvision.datasets name, or an image folder"}
    )
    data_root: str = field(default="data", metadata={"help": "where torchvision datasets live"})
    download: bool = field(default=False, metadata={"help": "let torchvision download the dataset"})
    image_size: int = field(default=32, metadata={"help": "training image side in pixels"})
    num_classes: Optional[int] = field(
        default=None, metadata={"help": "classes (default: the dataset's; fractals: 10)"}
    )
    samples_per_class: int = field(default=500, metadata={"help": "fractals: training images per class"})
    val_samples_per_class: int = field(default=50, metadata={"help": "fractals: validation images per class"})
    # GHN
    kind: str = field(default="ghn3", metadata={"help": "ghn3 (Graphormer) or ghn2 (gated GNN)"})
    hid: int = field(default=64, metadata={"help": "GHN hidden size"})
    layers: int = field(default=3, metadata={"help": "Graphormer layers (ghn3)"})
    heads: int = field(default=8, metadata={"help": "attention heads (ghn3)"})
    max_shape: tuple[int, int, int, int] = field(
        default=(64, 64, 11, 11), metadata={"help": "largest (out, in, k, k) tensor the decoder emits"}
    )
    init_from: Optional[str] = field(
        default=None,
        metadata={"help": "fine-tune this GHN ('bundled', a folder, ...); its architecture overrides kind/hid/... "
                 "(default: train from scratch)"},
    )
    # architectures
    num_archs: int = field(default=1000, metadata={"help": "size of the training architecture pool"})
    max_width: int = field(default=64, metadata={"help": "widest channel count of sampled nets"})
    max_cells: int = field(default=6, metadata={"help": "most cells in a sampled net"})
    torchvision_fraction: float = field(default=0.0, metadata={"help": "share of shrunk torchvision nets in the pool"})
    eval_archs: int = field(default=16, metadata={"help": "held-out architectures for evaluation"})
    # optimisation
    steps: int = field(default=1000, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=64, metadata={"help": "images per step (over all ranks)"})
    meta_batch: int = field(default=4, metadata={"help": "architectures per step and rank"})
    lr: float = field(default=1e-3, metadata={"help": "peak AdamW learning rate"})
    weight_decay: float = field(default=1e-2, metadata={"help": "AdamW weight decay"})
    warmup_steps: Optional[int] = field(
        default=None,
        metadata={
            "help": f"linear warmup steps before cosine decay, at most --steps (default: {DEFAULT_WARMUP_STEPS}, or a "
            "tenth of --steps if that is fewer)"
        },
    )
    grad_clip: float = field(default=5.0, metadata={"help": "gradient norm clip (0: off)"})
    label_smoothing: float = field(default=0.0, metadata={"help": "cross-entropy label smoothing"})
    postprocess: str = field(
        default="none",
        metadata={
            "help": "post-processing applied, with gradients, to every prediction before the loss (and in "
            "evaluation), e.g. 'orth+dcbalance': train the GHN for the networks apply writes (see "
            "ghn_init.postprocess)"
        },
    )
    amp: str = field(default="auto", metadata={"help": "auto (bf16 on GPUs that have it), bf16, fp16 or off"})
    seed: int = field(default=0, metadata={"help": "seeds data, architectures and the GHN's initialisation"})
    # bookkeeping
    checkpoint_every: int = field(default=200, metadata={"help": "steps between checkpoints"})
    eval_every: int = field(default=0, metadata={"help": "steps between evaluations (0: only at the end)"})
    eval_images: int = field(default=500, metadata={"help": "validation images per evaluation"})
    log_every: int = field(default=10, metadata={"help": "steps between metrics-log lines"})
    num_workers: int = field(default=0, metadata={"help": "data-loader worker processes"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, ..."})
    threads: Optional[int] = field(default=None, metadata={"help": "CPU threads for torch (default: torch's choice)"})
    export_dtype: str = field(default="float32", metadata={"help": "float32 or float16 storage in model.safetensors"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})
    command: Optional[str] = field(default=None, metadata={"help": "the command line, recorded in the model card"})

    def __post_init__(self) -> None:
        """Check every setting up front (:class:`~ghn_init.errors.InvalidArgumentError` naming it), so that a
        typo fails here and not after the data is loaded or an hour of training."""
        try:
            self.max_shape = tuple(int(s) for s in self.max_shape)  # type: ignore[assignment]
        except (TypeError, ValueError):
            self.max_shape = ()  # type: ignore[assignment]  # refused just below, naming the argument
        if len(self.max_shape) != 4 or self.max_shape[2] != self.max_shape[3] or min(self.max_shape) < 1:
            raise _invalid("max_shape", self.max_shape, "must be 4 positive integers OUT IN K K, e.g. 64 64 11 11")
        check_text("output", self.output)
        for name, choices in (
            ("amp", ("auto", "bf16", "fp16", "off")),
            ("export_dtype", ("float32", "float16")),
            ("kind", ("ghn2", "ghn3")),
        ):
            check_choice(name, getattr(self, name), choices)
        at_least_one = (
            "steps", "batch_size", "meta_batch", "num_archs", "checkpoint_every", "log_every", "eval_archs",
            "image_size", "samples_per_class", "val_samples_per_class", "hid", "layers", "heads", "max_width",
            "max_cells", "eval_images",
        )
        for name in at_least_one:
            check_int_at_least(name, getattr(self, name), minimum=1)
        for name in ("num_classes", "threads"):  # optional, but not 0 (0 would silently mean the default)
            if getattr(self, name) is not None:
                check_int_at_least(name, getattr(self, name), minimum=1, hint=" (or left out for the default)")
        for name in ("eval_every", "num_workers"):
            check_int_at_least(name, getattr(self, name), minimum=0)
        if self.warmup_steps is not None:
            check_int_at_least("warmup_steps", self.warmup_steps, minimum=0)
            if self.warmup_steps > self.steps:
                raise InvalidArgumentError(
                    f"warmup_steps {self.warmup_steps} is longer than the run (steps={self.steps}): the learning rate "
                    f"would never reach its peak nor decay; pass at most {self.steps} (e.g. {self.steps // 10}), or "
                    "leave it out for the default",
                    argument="warmup_steps",
                    value=self.warmup_steps,
                )
        check_seed("seed", self.seed)
        check_finite("lr", self.lr)
        for name in ("weight_decay", "grad_clip"):
            check_finite(name, getattr(self, name), positive=False)
        check_fraction("torchvision_fraction", self.torchvision_fraction, upper_open=False)
        check_fraction("label_smoothing", self.label_smoothing, upper_open=True)
        for name in ("download", "progress"):
            check_flag(name, getattr(self, name))
        check_text("data", self.data)
        try:
            self.postprocess = str(PostProcess.parse(self.postprocess))  # a typo fails here, not after an hour
        except ValueError as e:
            raise _invalid("postprocess", self.postprocess, f"is not a post-processing spec ({e})") from e
        if self.kind == "ghn3" and self.init_from is None and self.hid % self.heads:
            raise _invalid("hid", self.hid, f"must be divisible by heads ({self.heads}) for a ghn3")

    @property
    def warmup(self) -> int:
        """The warmup steps the schedule uses: ``warmup_steps``, or by default 100 and at most a tenth of the run."""
        if self.warmup_steps is not None:
            return self.warmup_steps
        return min(DEFAULT_WARMUP_STEPS, self.steps // 10)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["max_shape"] = list(self.max_shape)
        return d


def _invalid(name: str, value: Any, what: str) -> InvalidArgumentError:
    return InvalidArgumentError(f"{name} {what}, got {value!r}", argument=name, value=value)


def training_record(source: str) -> Optional[dict[str, Any]]:
    """The ``training`` record of a GHN saved by ``ghn-init train`` (its config.json), or None.

    Read for the bundled GHN and local folders or files (the config.json next to the weights); a Hub
    source or a GHN without a record (a converted published checkpoint) gives None.
    """
    from ..hub import BUNDLED, BUNDLED_DIR
    from ..hub.checkpoints import source_files

    path = BUNDLED_DIR if source == BUNDLED else Path(source).expanduser()
    configs = [f for f in source_files(path) if f.name == "config.json"]
    try:
        record = json.loads(configs[0].read_text(encoding="utf-8")).get("training")
    except (IndexError, OSError, ValueError, AttributeError):  # no config.json, unreadable, or no record
        return None
    return record if isinstance(record, dict) else None


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warmup from 1/warmup to 1, then cosine decay to 0 at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _distributed_context() -> tuple[int, int, int]:
    """(rank, world size, local rank); joins the process group torchrun describes in the environment."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))
    return 0, 1, 0


def _resolve_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    from ..hub.copies import parse_device

    device = parse_device(name)  # InvalidArgumentError for a device this machine lacks ("tpu9", "cuda:7")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device


def _may_leave_parameters_unused(config: TrainConfig, postprocess: PostProcess) -> bool:
    """Whether a training step can leave some GHN parameter out of the loss (DDP must then search for them).

    Every network the architecture generator draws has convolutions, 1-d tensors (norms, biases) and a linear
    classifier with a bias, so every GHN decoder takes part in every step's loss. Shrunk torchvision networks
    (some have no linear classifier) and post-processing that drops predicted tensors (the classifier, biases,
    gains, norms, embeddings keep the network's own init) can leave a decoder out. Searching when nothing can
    be unused costs a graph traversal per step and made DDP warn on every rank.
    """
    drops = any(
        getattr(postprocess, name)
        for name in ("drop_classifier", "drop_biases", "drop_gains", "drop_norms", "drop_embeddings")
    )
    return drops or config.torchvision_fraction > 0


def _amp_dtype(amp: str, device: torch.device) -> Optional[torch.dtype]:
    """Autocast dtype, or None: AMP only runs on GPUs (CPU autocast would only slow training here)."""
    if device.type != "cuda" or amp == "off":
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16


class Trainer:
    """One GHN training run in ``config.output``; resumes from the checkpoint there if there is one."""

    def __init__(self, config: TrainConfig, overwrite: bool = False) -> None:
        check_flag("overwrite", overwrite)
        self.output = check_output_folder(config.output, "output")  # before any work: not a file, writable
        self.config = config
        if config.threads:
            torch.set_num_threads(config.threads)
        self.rank, self.world_size, local_rank = _distributed_context()
        self.device = _resolve_device(config.device, local_rank)
        if overwrite:  # start afresh: what an earlier run wrote here goes (its checkpoint would be resumed)
            if self.rank == 0:
                clear_outputs(self.output, RUN_FILES)
            if self.world_size > 1:
                dist.barrier()
        if config.batch_size % self.world_size:
            raise ValueError(f"batch_size {config.batch_size} must be divisible by the {self.world_size} ranks")

        train_data, val_data, self.num_classes = build_datasets(
            config.data,
            image_size=config.image_size,
            seed=config.seed,
            root=config.data_root,
            download=config.download,
            num_classes=config.num_classes,
            samples_per_class=config.samples_per_class,
            val_samples_per_class=config.val_samples_per_class,
        )
        self.train_data = SeededSamples(train_data, config.seed)
        self.val_data = val_data
        self.order = EpochOrder(
            len(train_data), config.batch_size // self.world_size, config.seed, self.rank, self.world_size
        )

        torch.manual_seed(config.seed)  # the GHN's initialisation is the same on every rank
        self.fine_tuned_from: Optional[dict[str, Any]] = None  # set by _initial_ghn for --init-from
        self.ghn = self._initial_ghn().to(self.device).train()
        self.postprocess = PostProcess.parse(config.postprocess)
        if not self.postprocess.is_identity:  # trained for the networks this spec gives: apply's default with it
            self.ghn.config.postprocess = config.postprocess
        # GHN.forward decodes, so DistributedDataParallel sees (and syncs) every GHN call
        self.model: nn.Module = self.ghn
        if self.world_size > 1:
            self.model = nn.parallel.DistributedDataParallel(
                self.ghn,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=_may_leave_parameters_unused(config, self.postprocess),
            )
        pool_args = dict(
            seed=config.seed,
            num_classes=self.num_classes,
            image_size=config.image_size,
            max_shape=self.ghn.config.max_shape,
            virtual_edge_cutoff=self.ghn.virtual_edge_cutoff,
            max_width=config.max_width,
            max_cells=config.max_cells,
            torchvision_fraction=config.torchvision_fraction,
            device=self.device,
        )
        self.pool = ArchitecturePool(config.num_archs, stream="train", **pool_args)
        self.eval_pool = ArchitecturePool(config.eval_archs, stream="eval", **pool_args)

        self.optimizer = torch.optim.AdamW(self.ghn.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.warmup = config.warmup  # a resumed run keeps its own unless warmup_steps is given
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, self.warmup, self.config.steps)
        )
        self.extensions: list[dict[str, int]] = []  # each time a resumed run changed its length
        self.amp_dtype = _amp_dtype(config.amp, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.arch_rng = random.Random(f"ghn-init-draw/{config.seed}/{self.rank}")

        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.elapsed_seconds = 0.0
        self.recent_losses: list[float] = []
        self.last_eval: dict[str, float] = {}
        if (self.output / CHECKPOINT_NAME).exists():
            self.load_checkpoint(self.output / CHECKPOINT_NAME)

    # ------------------------------------------------------------------ setup

    def _initial_ghn(self) -> GHN:
        cfg = self.config
        if cfg.init_from:
            from ..hub import load_ghn

            ghn = load_ghn(cfg.init_from)
            copy = GHN(GHNConfig.from_dict(ghn.config.to_dict()))  # never train the cached, shared instance
            copy.load_state_dict(ghn.state_dict())
            # the trained GHN is not the one it starts from: drop its name/source, keep where it came from
            base = copy.config.extra
            origin = str(base.get("name") or base.get("source") or cfg.init_from)
            copy.config.extra = {k: v for k, v in base.items() if k not in ("name", "source")}
            copy.config.extra["fine_tuned_from"] = origin
            self.fine_tuned_from = {"source": origin, "training": training_record(cfg.init_from)}
            return copy
        return GHN(
            GHNConfig(
                kind=cfg.kind,
                hid=cfg.hid,
                max_shape=cfg.max_shape,
                num_classes=self.num_classes,
                layers=cfg.layers if cfg.kind == "ghn3" else 0,
                heads=cfg.heads,
            )
        )

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ------------------------------------------------------------------ training

    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Image batches from the saved position on, epoch after epoch."""
        while True:
            batches = self.order.batches(self.epoch, self.batch_in_epoch)
            loader = DataLoader(
                self.train_data,
                batch_sampler=batches,
                num_workers=self.config.num_workers,
                pin_memory=self.device.type == "cuda",
                generator=torch.Generator(),  # keeps DataLoader from drawing on the global RNG
            )
            for images, labels in loader:
                self.batch_in_epoch += 1
                yield images, labels
            self.epoch += 1
            self.batch_in_epoch = 0

    def _meta_batch_loss(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Mean cross-entropy over the meta-batch of predicted networks, and their mean accuracy."""
        draws = self.arch_rng.sample(range(len(self.pool)), min(self.config.meta_batch, len(self.pool)))
        archs = [self.pool[i] for i in draws]
        autocast = torch.autocast(
            self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
        )
        with autocast:
            predicted = self.model([a.graph for a in archs], [a.plan for a in archs])
            predicted = self._postprocessed(archs, predicted, draw=self.step)
            losses, correct = [], 0.0
            for arch, params in zip(archs, predicted, strict=True):
                logits = torch.func.functional_call(arch.model, params, (images,), strict=False)
                losses.append(F.cross_entropy(logits.float(), labels, label_smoothing=self.config.label_smoothing))
                correct += (logits.argmax(1) == labels).float().mean().item()
        return torch.stack(losses).mean(), correct / len(archs)

    def _postprocessed(
        self, archs: list[Any], predicted: list[dict[str, torch.Tensor]], draw: int
    ) -> list[dict[str, torch.Tensor]]:
        """``config.postprocess`` applied to each network's predictions, as ``apply`` would (gradients kept).

        Tensors it drops (``nobias``, ``nohead``, ...) fall back to the pool network's own init in
        ``functional_call``. Its random draws (``noise``, ``detile``) come from a generator seeded by
        (seed, rank, ``draw``), so a resumed run draws what an uninterrupted one would.
        """
        if self.postprocess.is_identity:
            return predicted
        seed = random.Random(f"ghn-init-postprocess/{self.config.seed}/{self.rank}/{draw}").getrandbits(63)
        generator = torch.Generator().manual_seed(seed)
        shaped = []
        for arch, params in zip(archs, predicted, strict=True):
            slots = arch.plan.slots()
            tensors = postprocess_predictions(
                arch.model,
                {name: (slots[name], tensor) for name, tensor in params.items()},
                self.postprocess,
                generator,
                classifier=arch.plan.classifier(),
                block=self.ghn.config.max_shape[:2],
            )
            shaped.append({name: tensor for name, (_, tensor) in tensors.items()})
        return shaped

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        loss, accuracy = self._meta_batch_loss(images, labels)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"step {self.step}: the meta-batch loss is {loss.item()}; lower --lr or raise --warmup-steps, "
                f"then resume from the last checkpoint in {self.output}"
            )
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        clip = self.config.grad_clip if self.config.grad_clip > 0 else float("inf")
        grad_norm = nn.utils.clip_grad_norm_(self.ghn.parameters(), clip)
        if not torch.isfinite(grad_norm) and self.amp_dtype != torch.float16:  # fp16's scaler skips such steps
            raise FloatingPointError(
                f"step {self.step}: the gradient is not finite (the GHN was not updated); lower --lr, or with "
                f"--postprocess orth add detile (tiled copies are rank-deficient: QR has no gradient there), "
                f"then resume from the last checkpoint in {self.output}"
            )
        self.scaler.step(self.optimizer)
        self.scaler.update()
        lr = self.scheduler.get_last_lr()[0]
        self.scheduler.step()
        self.step += 1
        return {
            "loss": self._mean_over_ranks(loss.item()),
            "acc": self._mean_over_ranks(accuracy),
            "grad_norm": float(grad_norm),
            "lr": lr,
        }

    def _mean_over_ranks(self, value: float) -> float:
        if self.world_size == 1:
            return value
        tensor = torch.tensor([value], device=self.device)
        dist.all_reduce(tensor)
        return tensor.item() / self.world_size

    def fit(self, until: Optional[int] = None) -> dict[str, float]:
        """Train up to step ``until`` (default: ``config.steps``), checkpointing on the way and at the end."""
        cfg = self.config
        until = min(until or cfg.steps, cfg.steps)
        from tqdm.auto import tqdm

        show = cfg.progress and self.is_main
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not show, desc="ghn-init train")
        batches = self._batches()
        with self.peer_failures():
            self._fit_loop(until, batches, bar)
        bar.close()
        return {"step": self.step, "train_loss": self.smoothed_loss()}

    @contextlib.contextmanager
    def peer_failures(self) -> Iterator[None]:
        """Turn another process's death (the backend's transport error in this one) into a one-line
        :class:`~ghn_init.errors.PeerProcessError` saying where to resume from (see :mod:`.peers`)."""
        try:
            yield
        except RuntimeError as e:
            if not is_peer_failure(e, self.world_size):
                raise
            checkpoint = self.output / CHECKPOINT_NAME
            raise peer_failure(
                e, rank=self.rank, world_size=self.world_size, step=self.step, checkpoint=checkpoint
            ) from e

    def _fit_loop(self, until: int, batches: Iterator, bar: Any) -> None:
        cfg = self.config
        while self.step < until:
            started = time.perf_counter()
            metrics = self.train_step(*next(batches))
            self.elapsed_seconds += time.perf_counter() - started
            self.recent_losses = (self.recent_losses + [metrics["loss"]])[-RECENT_LOSS_WINDOW:]
            bar.update(1)
            bar.set_postfix(loss=f"{metrics['loss']:.3f}", acc=f"{metrics['acc']:.3f}")
            if self.step % cfg.log_every == 0:
                self.log({"step": self.step, **metrics, "epoch": self.epoch, "seconds": round(self.elapsed_seconds, 1)})
            if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.steps:
                self.log({"step": self.step, **self.evaluate()})
            if self.step % cfg.checkpoint_every == 0 or self.step == until:
                self.save_checkpoint()

    def smoothed_loss(self) -> float:
        return sum(self.recent_losses) / len(self.recent_losses) if self.recent_losses else float("nan")

    # ------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Held-out architectures with predicted parameters (no fine-tuning) on held-out images.

        Networks run in training mode, i.e. normalisation uses batch statistics: a GHN predicts
        no running statistics, and the GHN papers evaluate predicted networks the same way.
        """
        self.ghn.eval()
        images, labels = self._validation_images()
        archs = [self.eval_pool[i] for i in range(len(self.eval_pool))]
        losses, accuracies = [], []
        for start in range(0, len(archs), self.config.meta_batch):
            chunk = archs[start : start + self.config.meta_batch]
            predicted = self._postprocessed(chunk, self.ghn([a.graph for a in chunk], [a.plan for a in chunk]), draw=-1)
            for arch, params in zip(chunk, predicted, strict=True):
                logits = torch.func.functional_call(arch.model, params, (images,), strict=False).float()
                losses.append(F.cross_entropy(logits, labels).item())
                accuracies.append((logits.argmax(1) == labels).float().mean().item())
        self.ghn.train()
        self.last_eval = {
            "val_loss": sum(losses) / len(losses),
            "val_acc": sum(accuracies) / len(accuracies),
            "val_archs": len(archs),
            "val_images": len(labels),
            "chance_acc": 1.0 / self.num_classes,
        }
        return self.last_eval

    def _validation_images(self) -> tuple[torch.Tensor, torch.Tensor]:
        count = min(self.config.eval_images, len(self.val_data))  # type: ignore[arg-type]
        step = max(1, len(self.val_data) // count)  # type: ignore[arg-type]
        samples = [self.val_data[i] for i in range(0, step * count, step)]
        images = torch.stack([image for image, _ in samples]).to(self.device)
        return images, torch.tensor([int(label) for _, label in samples], device=self.device)

    # ------------------------------------------------------------------ checkpoints, logs, export

    def _rng_state(self) -> dict[str, Any]:
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python": random.getstate(),
            "arch_draws": self.arch_rng.getstate(),
        }

    def _set_rng_state(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        random.setstate(state["python"])
        self.arch_rng.setstate(state["arch_draws"])

    def save_checkpoint(self) -> None:
        """Everything needed to continue exactly; written atomically by rank 0 with every rank's RNGs."""
        rng_states = [self._rng_state()]
        if self.world_size > 1:
            rng_states = [None] * self.world_size
            dist.all_gather_object(rng_states, self._rng_state())
        if not self.is_main:
            return
        state = {
            "version": CHECKPOINT_VERSION,
            "config": self.config.to_dict(),
            "ghn_config": self.ghn.config.to_dict(),
            "ghn": self.ghn.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "elapsed_seconds": self.elapsed_seconds,
            "recent_losses": self.recent_losses,
            "rng": rng_states,
            "fine_tuned_from": self.fine_tuned_from,  # the base as it was when training started
            "warmup": self.warmup,
            "extensions": self.extensions,
        }
        self.output.mkdir(parents=True, exist_ok=True)
        path = self.output / CHECKPOINT_NAME
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)

    def load_checkpoint(self, path: Path) -> None:
        from ..hub.safe_pickle import load_weights_only

        state = load_weights_only(path)  # tensors, numbers and tuples only; a refusal never advises unsafe loading
        if state.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"{path} has checkpoint version {state.get('version')}, expected {CHECKPOINT_VERSION}")
        saved, current = state["config"], self.config.to_dict()
        defaults = {f.name: f.default for f in fields(TrainConfig)}  # a setting added since: its default then
        changed = sorted(
            k
            for k in current
            if k not in RESUMABLE_CHANGES | SCHEDULE_SETTINGS and saved.get(k, defaults.get(k)) != current[k]
        )
        saved_steps = saved.get("steps", state["step"])
        saved_warmup = state.get("warmup", saved.get("warmup_steps"))  # checkpoints before 'warmup' stored an int
        if saved_warmup is None:
            saved_warmup = DEFAULT_WARMUP_STEPS
        if self.config.warmup_steps is not None and self.config.warmup_steps != saved_warmup:
            changed.append("warmup_steps")
            saved = {**saved, "warmup_steps": saved_warmup}
        if changed:
            details = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in changed)
            raise InvalidArgumentError(
                f"{path} was written by a run with other settings ({details}); use those settings to resume, "
                "overwrite=True (--overwrite) to start afresh, or pick a new output folder",
                argument=changed[0],
                value=current[changed[0]],
            )
        if state["step"] > self.config.steps:
            raise InvalidArgumentError(
                f"{path} is at step {state['step']}, past steps={self.config.steps}; pass at least "
                f"{state['step']} steps to continue it (more extend it), or overwrite=True (--overwrite) to start "
                "afresh",
                argument="steps",
                value=self.config.steps,
            )
        if len(state["rng"]) != self.world_size:
            raise ValueError(
                f"{path} was written by {len(state['rng'])} rank(s); resume it with as many, not {self.world_size}"
            )
        self.ghn.load_state_dict(state["ghn"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        self.elapsed_seconds = state["elapsed_seconds"]
        self.recent_losses = list(state["recent_losses"])
        self._set_rng_state(state["rng"][self.rank])
        self.fine_tuned_from = state.get("fine_tuned_from", self.fine_tuned_from)
        self.warmup = self.config.warmup_steps if self.config.warmup_steps is not None else saved_warmup
        self.extensions = [dict(e) for e in state.get("extensions", [])]
        if self.config.steps != saved_steps:  # a longer (or shorter) run: the schedule of the new length from here
            self.extensions.append({"at_step": self.step, "from_steps": saved_steps, "to_steps": self.config.steps})
            for group, base_lr in zip(self.optimizer.param_groups, self.scheduler.base_lrs, strict=True):
                group["lr"] = base_lr * lr_factor(self.step, self.warmup, self.config.steps)
            self.scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]
        if self.is_main:
            self._truncate_log(self.step)

    def log(self, record: dict[str, Any]) -> None:
        """Rank 0 appends one JSON line to the metrics log."""
        if not self.is_main:
            return
        self.output.mkdir(parents=True, exist_ok=True)
        with open(self.output / METRICS_NAME, "a") as f:
            f.write(json.dumps(record) + "\n")

    def _truncate_log(self, step: int) -> None:
        """Drop log lines written after the checkpoint, which the resumed run will write again."""
        log = self.output / METRICS_NAME
        if log.exists():
            lines = [line for line in log.read_text().splitlines() if json.loads(line)["step"] <= step]
            log.write_text("".join(line + "\n" for line in lines))

    def provenance(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "trained_with": "ghn-init train",
            "command": cfg.command,
            "data": {
                "name": cfg.data,
                "num_classes": self.num_classes,
                "image_size": cfg.image_size,
                "train_images": len(self.train_data),
                "val_images": len(self.val_data),  # type: ignore[arg-type]
            },
            "architectures": self.pool.describe(),
            "steps": self.step,
            "seed": cfg.seed,
            "world_size": self.world_size,
            "device": str(self.device),
            "train_seconds": round(self.elapsed_seconds, 1),
            "settings": {**cfg.to_dict(), "warmup_steps": self.warmup},  # the warmup used, also when defaulted
            **({"extensions": self.extensions} if self.extensions else {}),
            "final_metrics": {"train_loss_recent": self.smoothed_loss(), **self.last_eval},
            **({"fine_tuned_from": self.fine_tuned_from} if self.fine_tuned_from else {}),
        }

    def export(self, folder: Optional[Path] = None) -> Path:
        """Write model.safetensors + config.json + README.md (rank 0); loadable by ``load_ghn(folder)``."""
        folder = Path(folder) if folder is not None else self.output / "ghn"
        if self.is_main:
            dtype = torch.float16 if self.config.export_dtype == "float16" else torch.float32
            export_folder(self.ghn, folder, self.provenance(), dtype)
        if self.world_size > 1:
            dist.barrier()
        return folder


def train(config: Optional[TrainConfig] = None, *, overwrite: bool = False, **settings: Any) -> Path:
    """Train (or resume) a GHN, evaluate it, and export it to ``<output>/ghn``; returns that folder.

    ``train(output="runs/ghn", steps=2000)`` is shorthand for ``train(TrainConfig(...))``. A folder with a
    checkpoint is resumed from it: with the same settings the run continues exactly; with more ``steps`` a
    finished (or unfinished) run is extended, the learning rate following the schedule of the longer run from
    the checkpoint's step on (the model card says so).

    Args:
        config: the settings; or give them as keywords.
        overwrite: start afresh in a folder that holds an earlier run (its checkpoint, metrics log and exported
            GHN are removed first) instead of resuming it.

    Returns:
        The exported GHN folder, loadable with ``ghn_init.load_ghn``.

    Raises:
        InvalidArgumentError: a setting is out of range, the output folder cannot be written, or the checkpoint
            there is past ``steps``; before any work.

    Example:
        >>> folder = train(output="runs/ghn", steps=2000)  # doctest: +SKIP
        >>> folder = train(output="runs/ghn", steps=4000)  # doctest: +SKIP  # 2000 more steps of the same run
    """
    if config is None:
        config = TrainConfig(**settings)
    elif settings:
        raise InvalidArgumentTypeError(
            "pass either a TrainConfig or keyword settings, not both", argument="config", value=config
        )
    trainer = Trainer(config, overwrite=overwrite)
    trainer.fit()
    with trainer.peer_failures():
        trainer.evaluate()
        if trainer.is_main:
            trainer.log({"step": trainer.step, **trainer.last_eval})
        return trainer.export()


__all__ = ["TrainConfig", "Trainer", "train", "lr_factor"]
