"""Shared test helpers: where the reference fixtures are, and small GHNs built on the spot."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from ghn_init.networks import GHN, GHNConfig

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("GHN_INIT_FIXTURES", REPO.parent / "shared" / "fixtures"))


def fixtures_dir() -> Path:
    if not (FIXTURES / "index.json").exists():
        pytest.skip(
            f"reference fixtures not found at {FIXTURES}; set GHN_INIT_FIXTURES to the folder holding index.json"
        )
    return FIXTURES


def tiny_ghn(kind: str = "ghn3", seed: int = 0, **overrides) -> GHN:
    """A small randomly initialized GHN: enough to exercise every code path in milliseconds."""
    torch.manual_seed(seed)
    cfg = dict(kind=kind, hid=16, max_shape=(16, 16, 5, 5), num_classes=10, layers=2, heads=2)
    cfg.update(overrides)
    return GHN(GHNConfig(**cfg)).eval()


@pytest.fixture
def ghn3() -> GHN:
    return tiny_ghn("ghn3")


@pytest.fixture
def ghn2() -> GHN:
    return tiny_ghn("ghn2")
