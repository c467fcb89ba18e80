"""Formula-driven synthetic images (FractalDB-style, Kataoka et al. 2020) for GHN training.

Each class is a random iterated function system (IFS) of 2-4 contractive affine maps; its
images are the attractor rendered by the chaos game, seen through a random per-sample
affine jitter and colouring. This gives an endless, licence-free labelled dataset whose
classes are defined by shape, with no downloads.

Only the IFS parameters are cached; images are re-rendered on every access from a
generator seeded by ``(seed, index)``, so the dataset is deterministic and tiny in memory.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

MIN_MAPS, MAX_MAPS = 2, 4
MAX_CONTRACTION = 0.95  # spectral-norm bound per map; closer to 1 the chaos game mixes slowly
MIN_FILL = 0.15  # canvas fraction the canonical rendering must cover (~40% of draws pass)
FILL_CHECK_SIZE = 32
FILL_CHECK_POINTS = 4096
BURN_IN_STEPS = 8  # walkers start on the attractor; this only decorrelates them
RECORDED_STEPS = 16
MAX_ROTATION = math.pi / 6
SCALE_RANGE = (0.9, 1.25)  # shapes are fitted to the unit disc, so mild crops only
MAX_SHIFT = 0.1  # in units of the canvas half-width


@dataclass(frozen=True)
class IFS:
    """Affine maps ``(x, y) -> (a x + b y + e, c x + d y + f)`` stored as rows ``[a, b, c, d, e, f]``."""

    maps: torch.Tensor  # (K, 6)
    probs: torch.Tensor  # (K,), proportional to |det| of each linear part
    fixed_points: torch.Tensor  # (K, 2); each lies on the attractor, so walkers start there


def _generator(seed: int, stream: str, index: int) -> torch.Generator:
    """Independent, platform-stable generator for one (seed, stream, index) triple."""
    digest = hashlib.blake2b(f"{seed}/{stream}/{index}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)


def _sample_contractive_map(generator: torch.Generator) -> torch.Tensor:
    """Draw ``[a..f]`` uniformly in [-1, 1] until the linear part is a contraction."""
    while True:
        params = torch.rand(6, generator=generator, dtype=torch.float64) * 2 - 1
        if torch.linalg.matrix_norm(params[:4].view(2, 2), ord=2) < MAX_CONTRACTION:
            return params


def _fixed_points(maps: torch.Tensor) -> torch.Tensor:
    """Solve ``(I - A) p = t`` for every map; unique because each map is a contraction."""
    linear = maps[:, :4].reshape(-1, 2, 2)
    identity = torch.eye(2, dtype=maps.dtype).expand_as(linear)
    return torch.linalg.solve(identity - linear, maps[:, 4:])


def sample_ifs(generator: torch.Generator) -> IFS:
    """Sample an IFS whose canonical rendering covers at least ``MIN_FILL`` of the canvas.

    Low coverage means a degenerate attractor (a point, a line, a thin curve) that carries
    little shape information, so such systems are rejected and redrawn.
    """
    while True:
        num_maps = int(torch.randint(MIN_MAPS, MAX_MAPS + 1, (1,), generator=generator))
        maps = torch.stack([_sample_contractive_map(generator) for _ in range(num_maps)])
        dets = (maps[:, 0] * maps[:, 3] - maps[:, 1] * maps[:, 2]).abs()
        ifs = IFS(
            maps=maps.float(),
            probs=(dets / dets.sum()).float(),
            fixed_points=_fixed_points(maps).float(),
        )
        density = render_density(ifs, FILL_CHECK_SIZE, FILL_CHECK_POINTS, generator, jitter=False)
        if (density > 0).float().mean() >= MIN_FILL:
            return ifs


def chaos_game(ifs: IFS, points: int, generator: torch.Generator) -> torch.Tensor:
    """``points`` attractor points, shape (points, 2), from many parallel walkers.

    Vectorising over walkers keeps the Python loop at ``BURN_IN_STEPS + RECORDED_STEPS``
    iterations regardless of ``points``.
    """
    walkers = math.ceil(points / RECORDED_STEPS)
    steps = BURN_IN_STEPS + RECORDED_STEPS
    choices = torch.multinomial(ifs.probs, (steps + 1) * walkers, replacement=True, generator=generator)
    choices = choices.view(steps + 1, walkers)
    start = ifs.fixed_points[choices[0]]
    a, b, c, d, e, f = ifs.maps[choices[1:]].unbind(-1)  # each (steps, walkers)
    x, y = start[:, 0], start[:, 1]
    recorded = []
    for step in range(steps):
        x, y = a[step] * x + b[step] * y + e[step], c[step] * x + d[step] * y + f[step]
        if step >= BURN_IN_STEPS:
            recorded.append(torch.stack((x, y), dim=-1))
    return torch.cat(recorded)[:points]


def _random_uniform(low: float, high: float, generator: torch.Generator) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def render_density(
    ifs: IFS, image_size: int, points: int, generator: torch.Generator, *, jitter: bool
) -> torch.Tensor:
    """Log-density of the attractor on an ``image_size`` square canvas, scaled to [0, 1].

    The point cloud is centred and scaled to fit the unit disc, so rotation never pushes
    the canonical shape off the canvas; ``jitter`` then applies a random flip, rotation,
    scale and shift (points leaving the canvas are dropped).
    """
    xy = chaos_game(ifs, points, generator)
    low, high = xy.min(dim=0).values, xy.max(dim=0).values
    xy = xy - (low + high) / 2
    xy = xy / xy.norm(dim=1).max().clamp_min(1e-12)
    if jitter:
        angle = _random_uniform(-MAX_ROTATION, MAX_ROTATION, generator)
        scale = _random_uniform(*SCALE_RANGE, generator)
        flip = -1.0 if float(torch.rand((), generator=generator)) < 0.5 else 1.0
        cos, sin = scale * math.cos(angle), scale * math.sin(angle)
        transform = torch.tensor([[flip * cos, -sin], [flip * sin, cos]])
        shift = (torch.rand(2, generator=generator) * 2 - 1) * MAX_SHIFT
        xy = xy @ transform.T + shift
    pixels = ((xy + 1) * (image_size / 2)).floor().long()
    inside = ((pixels >= 0) & (pixels < image_size)).all(dim=1)
    columns, rows = pixels[inside, 0], image_size - 1 - pixels[inside, 1]  # y axis points up
    counts = torch.bincount(rows * image_size + columns, minlength=image_size * image_size)
    density = counts.float().log1p()
    return (density / density.max().clamp_min(1e-12)).view(image_size, image_size)


def render_fractal(ifs: IFS, image_size: int, points: int, generator: torch.Generator) -> torch.Tensor:
    """A jittered, randomly coloured 3xHxW rendering with values in [0, 1]."""
    density = render_density(ifs, image_size, points, generator, jitter=True)
    foreground = 0.3 + 0.7 * torch.rand(3, 1, 1, generator=generator)
    background = 0.2 * torch.rand(3, 1, 1, generator=generator)
    return background + (foreground - background) * density


class FractalDataset(Dataset[tuple[torch.Tensor, int]]):
    """``num_classes`` IFS classes with ``samples_per_class`` jittered renderings each.

    Index ``i`` has label ``i // samples_per_class``. Class ``c``'s IFS depends only on
    ``(seed, c)``, so datasets with more classes extend those with fewer. ``points``
    defaults to 4 chaos-game points per pixel.
    """

    def __init__(
        self,
        num_classes: int = 10,
        samples_per_class: int = 100,
        image_size: int = 32,
        seed: int = 0,
        points: int | None = None,
        normalize: bool = False,
    ) -> None:
        if num_classes < 1 or samples_per_class < 1 or image_size < 1:
            raise ValueError("num_classes, samples_per_class and image_size must be positive")
        self.num_classes = num_classes
        self.samples_per_class = samples_per_class
        self.image_size = image_size
        self.seed = seed
        self.points = points if points is not None else 4 * image_size * image_size
        self.normalize = normalize
        self.ifs = [sample_ifs(_generator(seed, "class", label)) for label in range(num_classes)]

    def __len__(self) -> int:
        return self.num_classes * self.samples_per_class

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        index %= len(self)
        label = index // self.samples_per_class
        generator = _generator(self.seed, "sample", index)
        image = render_fractal(self.ifs[label], self.image_size, self.points, generator)
        if self.normalize:
            mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
            std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
            image = (image - mean) / std
        return image, label
