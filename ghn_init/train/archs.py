"""Random image-classifier architectures for GHN training, in the spirit of DeepNets-1M.

A GHN generalises only as well as the variety of graphs it is trained on, so this module
samples many small, structurally different networks: a stem, stages of repeated DAG cells
whose nodes draw from the DeepNets-1M operation vocabulary, and a pooled linear head.

Every model is built from standard ``torch.nn`` layers only (plus add / cat / mul in
``forward``), so graph builders see ordinary modules and autograd ops. Forward passes are
plain tensor code with no data-dependent control flow, which keeps them traceable by
autograd and ``torch.fx``.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

Norm = Literal["bn", "ln", "none"]
Activation = Literal["relu", "gelu"]
Stem = Literal["conv3x3", "patchify"]
Downsample = Literal["none", "conv", "pool"]
Merge = Literal["sum", "concat"]

UNARY_OPS: tuple[str, ...] = (
    "conv_1x1",
    "conv_3x3",
    "conv_5x5",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
    "max_pool",
    "avg_pool",
    "msa",
    "cse",
)
MERGE_OPS: tuple[Merge, ...] = ("sum", "concat")

NORMS: tuple[Norm, ...] = ("bn", "ln", "none")
NORM_WEIGHTS = (0.6, 0.25, 0.15)  # mostly BN as in DeepNets-1M, some LN and norm-free nets
STEMS: tuple[tuple[Stem, int], ...] = (("conv3x3", 1), ("conv3x3", 2), ("patchify", 2), ("patchify", 4))
MAX_REDUCTIONS = 2  # keeps 32x32 inputs at >= 2x2 after the most aggressive stem
MAX_CELL_NODES = 4
MERGE_PROB = 0.3
MSA_MIN_STRIDE = 8  # attention only where tokens are few: <= 28x28 tokens for 224x224 inputs
MSA_WEIGHT = 4.0  # few stages reach MSA_MIN_STRIDE, so msa is favoured where it is allowed
WIDTH_STEP = 8


@dataclass
class NodeSpec:
    """One DAG node: ``op`` applied to the cell states listed in ``inputs`` (0 = cell input)."""

    op: str
    inputs: list[int]


@dataclass
class CellSpec:
    """A cell: nodes in topological order; unused node outputs are merged by ``output``."""

    nodes: list[NodeSpec]
    output: Merge

    @property
    def leaves(self) -> list[int]:
        """States (1-based node indices) not consumed by any later node; the cell's outputs."""
        consumed = {i for node in self.nodes for i in node.inputs}
        return [i for i in range(1, len(self.nodes) + 1) if i not in consumed]


@dataclass
class StageSpec:
    """``depth`` copies of ``cell`` at ``width`` channels, entered through ``downsample``."""

    width: int
    depth: int
    downsample: Downsample
    cell: CellSpec


@dataclass
class ArchSpec:
    """Complete, JSON-friendly description of a sampled architecture."""

    num_classes: int
    in_channels: int
    stem: Stem
    stem_stride: int
    norm: Norm
    activation: Activation
    stages: list[StageSpec]
    head_hidden: int  # 0: global pool straight into the classifier

    @property
    def num_cells(self) -> int:
        return sum(stage.depth for stage in self.stages)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArchSpec:
        """Inverse of :meth:`to_dict`, so logged specs can be rebuilt exactly."""
        stages = [
            StageSpec(
                width=s["width"],
                depth=s["depth"],
                downsample=s["downsample"],
                cell=CellSpec(
                    nodes=[NodeSpec(n["op"], list(n["inputs"])) for n in s["cell"]["nodes"]],
                    output=s["cell"]["output"],
                ),
            )
            for s in data["stages"]
        ]
        return cls(**{**data, "stages": stages})


# --------------------------------------------------------------------------- sampling


def _pick_input(rng: random.Random, num_states: int) -> int:
    """Favour the newest state half of the time so cells get depth, not only breadth."""
    return num_states - 1 if rng.random() < 0.5 else rng.randrange(num_states)


def _sample_cell(rng: random.Random, allow_msa: bool) -> CellSpec:
    unary_ops = UNARY_OPS if allow_msa else tuple(op for op in UNARY_OPS if op != "msa")
    op_weights = [MSA_WEIGHT if op == "msa" else 1.0 for op in unary_ops]
    nodes: list[NodeSpec] = []
    for num_states in range(1, rng.randint(1, MAX_CELL_NODES) + 1):
        if num_states >= 2 and rng.random() < MERGE_PROB:
            first = _pick_input(rng, num_states)
            second = rng.choice([i for i in range(num_states) if i != first])
            nodes.append(NodeSpec(rng.choice(MERGE_OPS), sorted([first, second])))
        else:
            op = rng.choices(unary_ops, weights=op_weights)[0]
            nodes.append(NodeSpec(op, [_pick_input(rng, num_states)]))
    return CellSpec(nodes=nodes, output=rng.choice(MERGE_OPS))


def sample_arch(
    rng: random.Random,
    *,
    num_classes: int,
    in_channels: int = 3,
    max_width: int = 64,
    max_cells: int = 6,
) -> ArchSpec:
    """Sample an architecture; all randomness comes from ``rng``.

    Widths are multiples of 8, start anywhere in ``[8, max_width]`` and double at each
    reduction stage but never exceed ``max_width``. Cells of one stage share a genotype,
    as in DeepNets-1M. ``msa`` is only offered to stages whose total stride is at least
    ``MSA_MIN_STRIDE`` so that attention stays affordable on 224x224 inputs.
    """
    if max_width < WIDTH_STEP:
        raise ValueError(f"max_width must be >= {WIDTH_STEP}, got {max_width}")
    if max_cells < 1:
        raise ValueError(f"max_cells must be >= 1, got {max_cells}")

    norm = rng.choices(NORMS, weights=NORM_WEIGHTS)[0]
    activation: Activation = rng.choice(("relu", "gelu"))
    stem, stem_stride = rng.choice(STEMS)
    num_cells = rng.randint(1, max_cells)
    num_reductions = rng.randint(0, min(MAX_REDUCTIONS, num_cells - 1))
    cuts = [0, *sorted(rng.sample(range(1, num_cells), num_reductions)), num_cells]
    base_width = rng.randrange(WIDTH_STEP, max_width + 1, WIDTH_STEP)

    stages = []
    for index, (start, end) in enumerate(zip(cuts, cuts[1:], strict=False)):
        stride = stem_stride * 2**index
        stages.append(
            StageSpec(
                width=min(base_width * 2**index, max_width),
                depth=end - start,
                downsample=rng.choice(("conv", "pool")) if index else "none",
                cell=_sample_cell(rng, allow_msa=stride >= MSA_MIN_STRIDE),
            )
        )
    head_hidden = 2 * stages[-1].width if rng.random() < 1 / 3 else 0
    return ArchSpec(
        num_classes=num_classes,
        in_channels=in_channels,
        stem=stem,
        stem_stride=stem_stride,
        norm=norm,
        activation=activation,
        stages=stages,
        head_hidden=head_hidden,
    )


# --------------------------------------------------------------------------- layers


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map (ConvNeXt style); still an ``nn.LayerNorm``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class SelfAttention2d(nn.Module):
    """Multi-head self-attention over the flattened spatial positions of an NCHW map."""

    def __init__(self, channels: int, use_norm: bool) -> None:
        super().__init__()
        # Up to 4 heads while each head keeps >= 8 channels; a single head always fits.
        self.num_heads = next((h for h in (4, 2) if channels % h == 0 and channels // h >= 8), 1)
        self.head_dim = channels // self.num_heads
        self.norm = nn.LayerNorm(channels) if use_norm else nn.Identity()
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.norm(x.flatten(2).transpose(1, 2))  # (N, HW, C)
        qkv = self.qkv(tokens).unflatten(-1, (3, self.num_heads, self.head_dim)).permute(2, 0, 3, 1, 4)
        query, key, value = qkv[0], qkv[1], qkv[2]  # (N, heads, HW, head_dim)
        attention = torch.softmax(query @ key.transpose(-2, -1) * self.head_dim**-0.5, dim=-1)
        mixed = (attention @ value).transpose(1, 2).flatten(2)  # (N, HW, C)
        return self.proj(mixed).transpose(1, 2).reshape_as(x)


class SqueezeExcite(nn.Module):
    """Channel squeeze-excitation: rescale channels by a gate computed from their spatial mean."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = max(4, channels // 4)
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.act = nn.ReLU()
        self.expand = nn.Conv2d(hidden, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.act(self.reduce(x.mean((2, 3), keepdim=True)))))


class Sum(nn.Module):
    """Elementwise sum of any number of same-shaped states (residual merge)."""

    def forward(self, *states: torch.Tensor) -> torch.Tensor:
        total = states[0]
        for state in states[1:]:
            total = total + state
        return total


class ConcatProject(nn.Module):
    """Channel concatenation followed by a 1x1 conv back to the cell width."""

    def __init__(self, num_inputs: int, channels: int, norm: Norm) -> None:
        super().__init__()
        self.project = nn.Conv2d(num_inputs * channels, channels, 1, bias=norm == "none")
        self.norm = _norm_layer(norm, channels)

    def forward(self, *states: torch.Tensor) -> torch.Tensor:
        return self.norm(self.project(torch.cat(states, dim=1)))


def _norm_layer(norm: Norm, channels: int) -> nn.Module:
    if norm == "bn":
        return nn.BatchNorm2d(channels)
    if norm == "ln":
        return ChannelLayerNorm(channels)
    return nn.Identity()


def _activation(activation: Activation) -> nn.Module:
    return nn.ReLU() if activation == "relu" else nn.GELU()


def _conv_block(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    spec: ArchSpec,
    *,
    stride: int = 1,
    dilation: int = 1,
    depthwise: bool = False,
    with_activation: bool = True,
) -> nn.Sequential:
    """Conv -> norm -> activation; a depthwise conv gets a pointwise conv (separable conv)."""
    padding = dilation * (kernel_size - 1) // 2
    bias = spec.norm == "none"
    if depthwise:
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels, in_channels, kernel_size, stride, padding, dilation, groups=in_channels, bias=False
            ),
            nn.Conv2d(in_channels, out_channels, 1, bias=bias),
        ]
    else:
        layers = [nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, bias=bias)]
    layers.append(_norm_layer(spec.norm, out_channels))
    if with_activation:
        layers.append(_activation(spec.activation))
    return nn.Sequential(*layers)


def _unary_op(op: str, channels: int, spec: ArchSpec) -> nn.Module:
    if op == "max_pool":
        return nn.MaxPool2d(3, stride=1, padding=1)
    if op == "avg_pool":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    if op == "msa":
        return SelfAttention2d(channels, use_norm=spec.norm != "none")
    if op == "cse":
        return SqueezeExcite(channels)
    kind, kernel = op.rsplit("_", 1)
    kernel_size = int(kernel.split("x")[0])
    if kind == "conv":
        return _conv_block(channels, channels, kernel_size, spec)
    if kind == "sep_conv":
        return _conv_block(channels, channels, kernel_size, spec, depthwise=True)
    if kind == "dil_conv":
        return _conv_block(channels, channels, kernel_size, spec, dilation=2, depthwise=True)
    raise ValueError(f"unknown op {op!r}")


def _node_op(node: NodeSpec, channels: int, spec: ArchSpec) -> nn.Module:
    if node.op == "sum":
        return Sum()
    if node.op == "concat":
        return ConcatProject(len(node.inputs), channels, spec.norm)
    return _unary_op(node.op, channels, spec)


class Cell(nn.Module):
    """A DAG of ops over states ``[input, node_1, ..., node_n]``; leaves are merged into the output."""

    def __init__(self, cell: CellSpec, channels: int, spec: ArchSpec) -> None:
        super().__init__()
        self.node_inputs = [list(node.inputs) for node in cell.nodes]
        self.leaves = cell.leaves
        self.nodes = nn.ModuleList(_node_op(node, channels, spec) for node in cell.nodes)
        self.output = Sum() if cell.output == "sum" else ConcatProject(len(self.leaves), channels, spec.norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states = [x]
        for op, inputs in zip(self.nodes, self.node_inputs, strict=True):
            states.append(op(*[states[i] for i in inputs]))
        return self.output(*[states[i] for i in self.leaves])


class SampledNet(nn.Module):
    """Stem -> stages of cells -> global average pool -> optional hidden FC -> ``classifier``.

    ``classifier`` is registered last, so it is the last parameterised module in
    ``modules()`` / ``parameters()`` order.
    """

    def __init__(self, spec: ArchSpec) -> None:
        super().__init__()
        self.spec = spec
        stem_width = spec.stages[0].width
        if spec.stem == "conv3x3":
            self.stem = _conv_block(spec.in_channels, stem_width, 3, spec, stride=spec.stem_stride)
        else:  # ViT-style patch embedding: non-overlapping patches, no activation
            patch = spec.stem_stride
            self.stem = _conv_block(spec.in_channels, stem_width, patch, spec, stride=patch, with_activation=False)

        stages = []
        in_width = stem_width
        for stage in spec.stages:
            layers: list[nn.Module] = []
            if stage.downsample == "conv":
                layers.append(_conv_block(in_width, stage.width, 3, spec, stride=2))
            elif stage.downsample == "pool":
                layers.append(
                    nn.Sequential(
                        nn.AvgPool2d(2, ceil_mode=True),
                        nn.Conv2d(in_width, stage.width, 1, bias=spec.norm == "none"),
                        _norm_layer(spec.norm, stage.width),
                    )
                )
            layers.extend(Cell(stage.cell, stage.width, spec) for _ in range(stage.depth))
            stages.append(nn.Sequential(*layers))
            in_width = stage.width
        self.stages = nn.Sequential(*stages)

        self.pool = nn.AdaptiveAvgPool2d(1)
        if spec.head_hidden:
            self.head = nn.Sequential(nn.Linear(in_width, spec.head_hidden), _activation(spec.activation))
            in_width = spec.head_hidden
        else:
            self.head = nn.Identity()
        self.classifier = nn.Linear(in_width, spec.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.pool(self.stages(self.stem(x))).flatten(1)
        return self.classifier(self.head(features))


def build_model(spec: ArchSpec) -> nn.Module:
    """Instantiate ``spec`` with PyTorch's default initialisation (uses the global torch RNG)."""
    return SampledNet(spec)


def sample_models(n: int, seed: int, **arch_kwargs: Any) -> list[nn.Module]:
    """Sample ``n`` models; architectures and weights depend only on ``(seed, index)``.

    Each model gets its own RNG stream, so ``sample_models(5, s)[:3]`` equals
    ``sample_models(3, s)``. The global torch RNG state is left untouched.
    ``arch_kwargs`` go to :func:`sample_arch` (``num_classes`` is required).
    """
    models = []
    for index in range(n):
        rng = random.Random(f"ghn-init-arch/{seed}/{index}")
        spec = sample_arch(rng, **arch_kwargs)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(rng.getrandbits(63))
            models.append(build_model(spec))
    return models


# --------------------------------------------------------------------------- torchvision

SHRINKABLE_TORCHVISION = ("mobilenet_v2", "mnasnet", "shufflenet_v2")
_SHUFFLENET_V2_REPEATS = [4, 8, 4]
_SHUFFLENET_V2_X1_STAGE_WIDTHS = [116, 232, 464]
_SHUFFLENET_V2_STEM_WIDTH = 24
_SHUFFLENET_V2_FINAL_WIDTH = 1024


def shrink_torchvision(name: str, width_mult: float, num_classes: int) -> nn.Module:
    """A randomly initialised torchvision model whose body is narrowed by ``width_mult``.

    Only torchvision's own constructors are used, so the scaling follows torchvision's
    rules (each family keeps some widths fixed, as its official small variants do):

    * ``mobilenet_v2``: ``MobileNetV2(width_mult=...)``; channels rounded to multiples of 8,
      the final 1280-channel conv is only ever widened, never narrowed.
    * ``mnasnet``: ``MNASNet(alpha=...)``; channels rounded to multiples of 8, final conv
      fixed at 1280 channels.
    * ``shufflenet_v2``: ``ShuffleNetV2`` with the x1.0 stage widths (116, 232, 464) scaled
      and rounded to multiples of 4 (the channel split needs even widths, and 1.0 gives
      exactly ``shufflenet_v2_x1_0``); the 24-channel stem and 1024-channel final conv are
      kept, as in torchvision's x0.5-x1.5 variants.

    ResNets are not offered: torchvision hard-codes their 64-512 stage widths, and
    ``width_per_group`` only changes the inner 3x3 width of bottleneck blocks.
    """
    import torchvision  # here, not at the top: `ghn-init list` & co. import this module, and torchvision takes ~1 s

    if width_mult <= 0:
        raise ValueError(f"width_mult must be positive, got {width_mult}")
    if name == "mobilenet_v2":
        return torchvision.models.MobileNetV2(num_classes=num_classes, width_mult=width_mult)
    if name == "mnasnet":
        return torchvision.models.MNASNet(alpha=width_mult, num_classes=num_classes)
    if name == "shufflenet_v2":
        stage_widths = [max(4, round(width * width_mult / 4) * 4) for width in _SHUFFLENET_V2_X1_STAGE_WIDTHS]
        widths = [_SHUFFLENET_V2_STEM_WIDTH, *stage_widths, _SHUFFLENET_V2_FINAL_WIDTH]
        return torchvision.models.ShuffleNetV2(_SHUFFLENET_V2_REPEATS, widths, num_classes=num_classes)
    raise ValueError(f"unsupported model {name!r}; choose from {SHRINKABLE_TORCHVISION}")
