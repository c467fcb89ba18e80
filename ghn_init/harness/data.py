"""Data for :func:`ghn_init.compare`: scikit-learn digits (demo), drawn shapes, an image folder, torchvision-style
datasets, and few-shot subsets of them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset

__all__ = [
    "Data",
    "digits",
    "shapes",
    "image_folder",
    "from_datasets",
    "load_data",
    "get_batch",
    "labels_of",
    "per_class_subset",
    "BUILTIN_DATA",
]

SHAPE_CLASSES = ("disk", "ring", "square", "square outline", "diamond", "cross", "triangle", "X")


@dataclass
class Data:
    """A train/test split of image classification data, images as normalized ``3 x S x S`` tensors.

    ``train`` and ``test`` are map-style datasets returning ``(image tensor, int label)``.
    """

    name: str
    train: Dataset
    test: Dataset
    num_classes: int

    def describe(self) -> str:
        return f"{self.name}: {len(self.train)} training / {len(self.test)} test images, {self.num_classes} classes"


def _normalize(images: torch.Tensor) -> torch.Tensor:
    from ..train.fractals import IMAGENET_MEAN, IMAGENET_STD  # (ghn_init.train imports torchvision: lazily)

    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((images - mean) / std).contiguous()


def digits(image_size: int = 32, test_fraction: float = 0.25, split_seed: int = 0) -> Data:
    """scikit-learn's 1,797 8x8 handwritten digits, upscaled to RGB ``image_size`` squares (needs scikit-learn).

    A stratified split, ImageNet normalization. Small and offline: the built-in demo data.

    Raises:
        ImportError: scikit-learn is not installed (``pip install 'ghn-init[compare]'``).
    """
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as e:
        raise ImportError("the digits data needs scikit-learn: pip install 'ghn-init[compare]'") from e
    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = _normalize(images.expand(-1, 3, -1, -1))
    labels = torch.tensor(bunch.target)
    train_idx, test_idx = train_test_split(
        list(range(len(labels))), test_size=test_fraction, random_state=split_seed, stratify=bunch.target
    )
    return Data(
        "digits",
        TensorDataset(images[train_idx], labels[train_idx]),
        TensorDataset(images[test_idx], labels[test_idx]),
        10,
    )


def _draw_shapes(n_per_class: int, seed: int, size: int = 32) -> TensorDataset:
    """``n_per_class`` images of each shape in :data:`SHAPE_CLASSES`, standardized per channel, with labels."""
    g = torch.Generator().manual_seed(seed)
    n = n_per_class * len(SHAPE_CLASSES)
    labels = torch.arange(len(SHAPE_CLASSES)).repeat_interleave(n_per_class)
    centre = torch.rand(n, 2, generator=g) * (size * 0.4) + size * 0.3
    radius = torch.rand(n, 1, 1, generator=g) * (size * 0.2) + size * 0.15
    coords = torch.arange(size, dtype=torch.float32)
    dy = coords.view(1, size, 1) - centre[:, 0].view(n, 1, 1)
    dx = coords.view(1, 1, size) - centre[:, 1].view(n, 1, 1)
    adx, ady = dx.abs(), dy.abs()
    dist, box = (dx**2 + dy**2).sqrt(), torch.maximum(adx, ady)
    masks = (
        torch.stack(
            [
                dist < radius,
                (dist < radius) & (dist > radius - 2.5),
                box < radius,
                (box < radius) & (box > radius - 2.5),
                adx + ady < radius,
                ((adx < 2) & (ady < radius)) | ((ady < 2) & (adx < radius)),
                (dy < radius * 0.8) & (adx < (dy + radius) / 2),
                ((adx - ady).abs() < 1.5) & (box < radius),
            ]
        )[labels, torch.arange(n)]
        .float()
        .unsqueeze(1)
    )
    # a bright shape on a darker background, each with a random colour tint
    bg = 0.4 * torch.rand(n, 1, 1, 1, generator=g) + 0.1 * torch.rand(n, 3, 1, 1, generator=g)
    fg = bg + 0.4 + 0.2 * torch.rand(n, 3, 1, 1, generator=g)
    images = bg + (fg - bg) * masks + 0.05 * torch.randn(n, 3, size, size, generator=g)
    images = (images - images.mean((0, 2, 3), keepdim=True)) / images.std((0, 2, 3), keepdim=True)
    return TensorDataset(images, labels)


def shapes(image_size: int = 32) -> Data:
    """Eight classes of procedurally drawn shapes (disk, ring, square, square outline, diamond, cross, triangle, X)
    of random size and position, brighter than a noisy background, with random colour tints; 1,600 training and
    800 test images from fixed seeds (1 and 2), standardized per channel. Offline, no extra dependency; the data of
    ``benchmarks/heldout_shapes.py``."""
    return Data("shapes", _draw_shapes(200, 1, image_size), _draw_shapes(100, 2, image_size), len(SHAPE_CLASSES))


BUILTIN_DATA = {"digits": digits, "shapes": shapes}


def labels_of(dataset: Dataset) -> torch.Tensor:
    """Every label of a dataset (read directly from a ``TensorDataset``, else item by item)."""
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[1]
    return torch.tensor([int(dataset[i][1]) for i in range(len(dataset))])


def per_class_subset(dataset: Dataset, k: int, seed: int) -> Dataset:
    """``k`` examples of each class (all of a class that has fewer), drawn with ``seed``: few-shot training data.

    The same ``(dataset, k, seed)`` always gives the same subset, in class order.
    """
    labels = labels_of(dataset)
    g = torch.Generator().manual_seed(seed)
    chosen = []
    for c in sorted(set(labels.tolist())):
        idx = torch.nonzero(labels == c).flatten()
        chosen.append(idx[torch.randperm(len(idx), generator=g)[:k]])
    indices = torch.cat(chosen).sort().values
    if isinstance(dataset, TensorDataset):
        return TensorDataset(*(t[indices] for t in dataset.tensors))
    return torch.utils.data.Subset(dataset, indices.tolist())


class _Prepared(Dataset):
    """Items of any torchvision-style dataset as ``(3 x S x S float tensor, int label)``.

    PIL images are resized, converted to tensors and ImageNet-normalized; tensors are taken as
    already normalized (grey ones get three channels, other sizes are resized).
    """

    def __init__(self, dataset: Any, image_size: int) -> None:
        self.dataset, self.image_size = dataset, image_size

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image, label = self.dataset[i][:2]
        if not isinstance(image, torch.Tensor):
            from torchvision.transforms.functional import pil_to_tensor

            image = pil_to_tensor(image.convert("RGB")).float().div(255).unsqueeze(0)
            image = F.interpolate(
                image, size=(self.image_size,) * 2, mode="bilinear", antialias=True, align_corners=False
            )
            image = _normalize(image)[0]
        else:
            image = image.float()
            if image.dim() == 2:
                image = image.unsqueeze(0)
            if image.shape[0] == 1:
                image = image.expand(3, -1, -1)
            if tuple(image.shape[1:]) != (self.image_size,) * 2:
                image = F.interpolate(
                    image.unsqueeze(0), size=(self.image_size,) * 2, mode="bilinear", align_corners=False
                )[0]
        return image, int(label)


def _num_classes(dataset: Any) -> int:
    """From ``classes``, ``targets`` or ``labels`` (the trainer's rule), else from every label."""
    from ..train.data import _num_classes_of

    try:
        return _num_classes_of(dataset)
    except ValueError:
        return int(max(int(dataset[i][1]) for i in range(len(dataset))) + 1)


def from_datasets(
    train: Any, test: Any, image_size: int = 32, num_classes: Optional[int] = None, name: str = "dataset"
) -> Data:
    """Wrap torchvision-style datasets (``ds[i] -> (PIL image or tensor, label)``) for :func:`ghn_init.compare`.

    Example:
        >>> data = from_datasets(CIFAR10(root, train=True), CIFAR10(root, train=False))  # doctest: +SKIP
    """
    for part, ds in (("train", train), ("test", test)):
        if not (hasattr(ds, "__getitem__") and hasattr(ds, "__len__")):
            raise TypeError(
                f"{part} data must be a map-style dataset (ds[i] -> (image, label)), got {type(ds).__name__}"
            )
        if len(ds) == 0:
            raise ValueError(f"{part} dataset is empty")
    n = num_classes or _num_classes(train)
    return Data(name, _Prepared(train, image_size), _Prepared(test, image_size), n)


def image_folder(root: Union[str, Path], image_size: int = 32, test_fraction: float = 0.2, split_seed: int = 0) -> Data:
    """Images in ``root/CLASS/*.jpg`` (torchvision ``ImageFolder``).

    With ``root/train`` and ``root/val`` (or ``root/test``) subfolders those are the split;
    otherwise a seeded random ``test_fraction`` of the images is held out.

    Raises:
        FileNotFoundError: ``root`` is not a folder of class folders with images.
    """
    from torchvision.datasets import ImageFolder

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist; use digits or a folder of class folders")
    test_dir = next((root / d for d in ("val", "test") if (root / d).is_dir()), None)
    try:
        if (root / "train").is_dir() and test_dir is not None:
            train, test = ImageFolder(str(root / "train")), ImageFolder(str(test_dir))
            return from_datasets(train, test, image_size, len(train.classes), name=str(root))
        full = ImageFolder(str(root))
    except (FileNotFoundError, RuntimeError) as e:
        raise FileNotFoundError(f"{root} is not an image folder (root/CLASS/IMAGE): {e}") from e
    order = torch.randperm(len(full), generator=torch.Generator().manual_seed(split_seed)).tolist()
    n_test = max(1, int(round(test_fraction * len(full))))
    test = torch.utils.data.Subset(full, order[:n_test])
    train = torch.utils.data.Subset(full, order[n_test:])
    return from_datasets(train, test, image_size, len(full.classes), name=str(root))


def load_data(spec: Union[str, Data, tuple], image_size: int = 32, download: bool = False) -> Data:
    """``digits``, ``shapes``, an image folder path, ``torchvision:NAME[:ROOT]`` (e.g. ``torchvision:CIFAR10:data``), a
    :class:`Data`, or a ``(train, test)`` pair of datasets.

    Raises:
        ValueError: an unknown spec.
    """
    if isinstance(spec, Data):
        return spec
    if isinstance(spec, tuple) and len(spec) == 2:
        return from_datasets(spec[0], spec[1], image_size)
    if not isinstance(spec, str):
        raise TypeError(
            "data must be 'digits', 'shapes', a folder, torchvision:NAME, Data or (train, test), "
            f"got {type(spec).__name__}"
        )
    if spec in BUILTIN_DATA:
        return BUILTIN_DATA[spec](image_size)
    if spec.startswith("torchvision:"):
        from ..train.data import _torchvision_dataset  # the trainer's loader: train= or split= datasets alike

        _, name, *rest = spec.split(":", 2)
        root = rest[0] if rest else "data"
        train, test = (
            _torchvision_dataset(name, root, part, download, transform=None, root_hint=f"torchvision:{name}:ROOT")
            for part in (True, False)
        )
        return from_datasets(train, test, image_size, name=name)
    if Path(spec).is_dir():
        return image_folder(spec, image_size)
    raise ValueError(f"unknown data {spec!r}; use digits, shapes, an image folder, or torchvision:NAME[:ROOT]")


def get_batch(dataset: Dataset, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels at ``indices`` (direct tensor indexing for in-memory data)."""
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[0][indices], dataset.tensors[1][indices]
    items = [dataset[int(i)] for i in indices]
    return torch.stack([x for x, _ in items]), torch.tensor([int(y) for _, y in items])
