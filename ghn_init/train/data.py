"""Image data for GHN training, served in an order that a checkpoint can reproduce exactly.

Exact resume needs two things from the data: the order of samples (a pure function of
``(seed, epoch)``), and the randomness of augmentations (a pure function of
``(seed, epoch, index)``). Both hold here whatever the number of loader workers and
wherever training stops, because each sample seeds its own RNGs before its transform runs.
"""

from __future__ import annotations

import hashlib
import inspect
import random
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from .fractals import IMAGENET_MEAN, IMAGENET_STD, FractalDataset

FRACTALS = "fractals"


def _to_rgb(image: Any) -> Any:
    """Grayscale and palette images become 3-channel, as every GHN-trained net expects RGB."""
    return image.convert("RGB")


def image_transforms(image_size: int, train: bool) -> Callable[[Any], torch.Tensor]:
    """Standard light augmentation for training (crop + flip), a centre crop for evaluation."""
    from torchvision import transforms as T

    normalize = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    if train:
        steps = [T.Lambda(_to_rgb), T.RandomResizedCrop(image_size, scale=(0.35, 1.0)), T.RandomHorizontalFlip()]
    else:
        steps = [T.Lambda(_to_rgb), T.Resize(round(image_size * 8 / 7)), T.CenterCrop(image_size)]
    return T.Compose([*steps, T.ToTensor(), normalize])


def _num_classes_of(dataset: Dataset) -> int:
    classes = getattr(dataset, "classes", None)
    if classes:
        return len(classes)
    targets = getattr(dataset, "targets", None) or getattr(dataset, "labels", None)
    if targets is not None:
        return int(torch.as_tensor(targets).max()) + 1
    raise ValueError(f"cannot tell how many classes {type(dataset).__name__} has; pass num_classes explicitly")


def _torchvision_dataset(
    name: str, root: str, train: bool, download: bool, transform: Callable, root_hint: str = "--data-root"
) -> Dataset:
    """``torchvision.datasets.<name>`` under ``root``; ``root_hint`` says how the caller's user names another
    folder (``--data-root`` for ``ghn-init train``, ``torchvision:NAME:ROOT`` for ``ghn-init compare``)."""
    import torchvision.datasets

    cls = getattr(torchvision.datasets, name, None)
    if not (inspect.isclass(cls) and issubclass(cls, Dataset)):
        raise ValueError(
            f"unknown dataset {name!r}: use 'fractals', a torchvision.datasets class name (e.g. CIFAR10), "
            "or a folder of class subfolders (ImageFolder layout)"
        )
    params = inspect.signature(cls).parameters
    if "train" in params:
        split: dict[str, Any] = {"train": train}
    elif "split" in params:
        split = {"split": "train" if train else "test"}
    else:
        raise ValueError(f"torchvision.datasets.{name} has neither a 'train' nor a 'split' argument")
    if "download" in params:
        split["download"] = download
    try:
        return cls(root, transform=transform, **split)
    except RuntimeError as e:  # torchvision raises RuntimeError for missing files
        why = " ".join(str(e).split())
        raise FileNotFoundError(
            f"{name} not found under {root!r} ({why}); pass --download to fetch it, or {root_hint} for the folder "
            "that holds it"
        ) from e


def _image_folder(root: Path, image_size: int, val_fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """``root/train`` + ``root/val`` if both exist, else a seeded ``val_fraction`` split of ``root``."""
    from torchvision.datasets import ImageFolder

    if (root / "train").is_dir() and (root / "val").is_dir():
        return (
            ImageFolder(str(root / "train"), transform=image_transforms(image_size, True)),
            ImageFolder(str(root / "val"), transform=image_transforms(image_size, False)),
        )
    train_view = ImageFolder(str(root), transform=image_transforms(image_size, True))
    val_view = ImageFolder(str(root), transform=image_transforms(image_size, False))
    order = torch.randperm(len(train_view), generator=torch.Generator().manual_seed(seed)).tolist()
    num_val = max(1, round(val_fraction * len(order)))
    return Subset(train_view, order[num_val:]), Subset(val_view, order[:num_val])


def materialize(dataset: Dataset) -> TensorDataset:
    """Render a deterministic dataset once into memory, so training steps only index tensors."""
    images, labels = zip(*(dataset[i] for i in range(len(dataset))), strict=True)  # type: ignore[arg-type]
    return TensorDataset(torch.stack(images), torch.tensor(labels))


def build_datasets(
    data: str,
    *,
    image_size: int,
    seed: int,
    root: str = "data",
    download: bool = False,
    num_classes: Optional[int] = None,
    samples_per_class: int = 500,
    val_samples_per_class: int = 50,
    val_fraction: float = 0.05,
) -> tuple[Dataset, Dataset, int]:
    """(train, validation, number of classes) for ``data``.

    ``data`` is ``"fractals"`` (built in, no download; class and sample counts from the
    arguments, validation images are further renderings of the same classes), a
    ``torchvision.datasets`` class name (``train`` / test split), or an image folder.
    """
    if data == FRACTALS:
        classes = num_classes or 10
        per_class = samples_per_class + val_samples_per_class
        full = materialize(FractalDataset(classes, per_class, image_size, seed=seed, normalize=True))
        position = torch.arange(len(full)) % per_class
        train_idx = torch.nonzero(position < samples_per_class).flatten().tolist()
        val_idx = torch.nonzero(position >= samples_per_class).flatten().tolist()
        return Subset(full, train_idx), Subset(full, val_idx), classes
    if Path(data).is_dir():
        train, val = _image_folder(Path(data), image_size, val_fraction, seed)
    else:
        train = _torchvision_dataset(data, root, True, download, image_transforms(image_size, True))
        val = _torchvision_dataset(data, root, False, download, image_transforms(image_size, False))
    base = train.dataset if isinstance(train, Subset) else train
    return train, val, num_classes or _num_classes_of(base)


def _sample_seed(seed: int, epoch: int, index: int) -> int:
    digest = hashlib.blake2b(f"ghn-init-sample/{seed}/{epoch}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class SeededSamples(Dataset[tuple[torch.Tensor, int]]):
    """Indexed by ``(epoch, index)``: the sample's augmentation RNGs are seeded from that pair.

    The global torch and Python RNGs are restored afterwards, so loading data never shifts
    the randomness the rest of training sees.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        epoch, index = key
        sample_seed = _sample_seed(self.seed, epoch, index)
        python_state = random.getstate()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(sample_seed)
                random.seed(sample_seed)
                return self.dataset[index]
        finally:
            random.setstate(python_state)


class EpochOrder:
    """Which samples each step reads: a seeded permutation per epoch, sharded across ranks.

    A position is ``(epoch, batch)``; :meth:`batches` lists the remaining batches of an epoch
    from any position, which is all a resumed run needs to continue the same order.
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.batches_per_epoch = num_samples // (batch_size * world_size)
        if self.batches_per_epoch < 1:
            raise ValueError(
                f"{num_samples} training samples cannot fill one batch of {batch_size} per rank "
                f"on {world_size} rank(s); lower the batch size or add data"
            )
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size

    def batches(self, epoch: int, start: int = 0) -> list[list[tuple[int, int]]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(self.num_samples, generator=generator)
        per_step = self.batch_size * self.world_size
        result = []
        for b in range(start, self.batches_per_epoch):
            chunk = order[b * per_step : (b + 1) * per_step][self.rank :: self.world_size]
            result.append([(epoch, int(i)) for i in chunk])
        return result
