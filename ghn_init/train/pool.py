"""A fixed, seeded pool of training architectures, each traced and planned once.

DeepNets-1M trains GHNs on a fixed set of architectures; a pool gives the same: architecture
``i`` is a pure function of ``(seed, stream, i)``, so runs, resumes and ranks agree on it, and
its graph and prediction plan are computed on first use and then reused every time it is drawn.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Union

import torch
from torch import nn

from ..graph import Graph, trace
from ..planning import Plan, plan
from .archs import SHRINKABLE_TORCHVISION, build_model, sample_arch, shrink_torchvision

TORCHVISION_WIDTHS = (0.25, 0.35, 0.5, 0.75)


@dataclass
class PooledArch:
    """A ready-to-predict architecture: the model (its own parameters are frozen), graph and plan."""

    description: str
    model: nn.Module
    graph: Graph
    plan: Plan


class ArchitecturePool:
    """``size`` architectures: random DeepNets-1M-style nets, a ``torchvision_fraction`` of shrunk torchvision nets."""

    def __init__(
        self,
        size: int,
        *,
        seed: int,
        stream: str,
        num_classes: int,
        image_size: int,
        max_shape: tuple[int, ...],
        virtual_edge_cutoff: int,
        max_width: int = 64,
        max_cells: int = 6,
        torchvision_fraction: float = 0.0,
        device: Union[str, torch.device] = "cpu",
    ) -> None:
        if size < 1:
            raise ValueError(f"an architecture pool needs at least one architecture, got size={size}")
        if not 0.0 <= torchvision_fraction <= 1.0:
            raise ValueError(f"torchvision_fraction must be in [0, 1], got {torchvision_fraction}")
        self.size = size
        self.seed = seed
        self.stream = stream
        self.num_classes = num_classes
        self.image_size = image_size
        self.max_shape = max_shape
        self.virtual_edge_cutoff = virtual_edge_cutoff
        self.max_width = max_width
        self.max_cells = max_cells
        self.torchvision_fraction = torchvision_fraction
        self.device = torch.device(device)
        self._cache: dict[int, PooledArch] = {}

    def __len__(self) -> int:
        return self.size

    def _build(self, index: int) -> tuple[str, nn.Module]:
        rng = random.Random(f"ghn-init-pool/{self.seed}/{self.stream}/{index}")
        use_torchvision = rng.random() < self.torchvision_fraction
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(rng.getrandbits(63))
            if use_torchvision:
                name, width = rng.choice(SHRINKABLE_TORCHVISION), rng.choice(TORCHVISION_WIDTHS)
                return f"{name}(width_mult={width})", shrink_torchvision(name, width, self.num_classes)
            spec = sample_arch(rng, num_classes=self.num_classes, max_width=self.max_width, max_cells=self.max_cells)
            return f"sampled({spec.num_cells} cells, width<={self.max_width})", build_model(spec)

    def __getitem__(self, index: int) -> PooledArch:
        if not 0 <= index < self.size:
            raise IndexError(f"architecture {index} is outside the pool of {self.size}")
        arch = self._cache.get(index)
        if arch is None:
            description, model = self._build(index)
            model = model.to(self.device).train().requires_grad_(False)  # the GHN's predictions replace them
            graph = trace(model, (3, self.image_size, self.image_size), virtual_edge_cutoff=self.virtual_edge_cutoff)
            arch = PooledArch(description, model, graph, plan(graph, model, self.max_shape))
            self._cache[index] = arch
        return arch

    def describe(self) -> dict[str, Any]:
        """JSON-friendly provenance for config.json and the model card."""
        return {
            "generator": "ghn_init.train.archs.sample_arch (DeepNets-1M-style cells)",
            "pool_size": self.size,
            "seed": self.seed,
            "max_width": self.max_width,
            "max_cells": self.max_cells,
            "torchvision_fraction": self.torchvision_fraction,
            "torchvision_families": list(SHRINKABLE_TORCHVISION) if self.torchvision_fraction else [],
        }
