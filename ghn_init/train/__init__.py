"""Training graph hypernetworks: random architectures, synthetic data, and the training loop.

    from ghn_init.train import train
    folder = train(output="runs/my-ghn", data="fractals", steps=2000)
    ghn = ghn_init.load_ghn(folder)
"""

from .archs import build_model, sample_arch, sample_models, shrink_torchvision
from .export import export_folder
from .fractals import FractalDataset
from .pool import ArchitecturePool
from .trainer import TrainConfig, Trainer, train

__all__ = [
    "train",
    "TrainConfig",
    "Trainer",
    "ArchitecturePool",
    "FractalDataset",
    "export_folder",
    "sample_arch",
    "sample_models",
    "build_model",
    "shrink_torchvision",
]
