"""Shared test helpers: where the reference fixtures are, and small GHNs built on the spot."""

from __future__ import annotations

import collections
import io
import os
import pickle
from pathlib import Path
from typing import Sequence

import pytest
import torch
from torch import nn

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


def tiny_cnn(classes: int = 10, widths: Sequence[int] = (8,), dropout: float = 0.0) -> nn.Sequential:
    """The small CNN tests run on: per width a 3x3 conv (padding 1), batch norm and ReLU, then an optional
    dropout, global average pooling and a linear classifier."""
    layers: list[nn.Module] = []
    channels = 3
    for width in widths:
        layers += [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
        channels = width
    if dropout:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, classes))


@pytest.fixture
def ghn3() -> GHN:
    return tiny_ghn("ghn3")


@pytest.fixture
def ghn2() -> GHN:
    return tiny_ghn("ghn2")


# Top-level tables of the published GHN-3 files that ghn-init keeps in the first Graphormer layer.
_GRAPHORMER_TABLES = ("centrality_embed_in", "centrality_embed_out", "input_dist_embed")


def published_checkpoint(ghn: GHN, layout: str = "ghn3") -> bytes:
    """``ghn`` as bytes in a published file layout, so hub tests need no downloaded or fixture checkpoint.

    ``"ghn3"``: the GHN-3 Hub files: a bare state dict pickled with protocol 4 (``joblib.dump`` of a dict of
    tensors writes these same bytes), the Graphormer tables at the top level. ``"ppuda"``: a ``torch.save``
    archive of ``{'state_dict', 'config', 'epoch'}`` with the decoder's linear layers as 1x1 convolutions.
    """
    state = ghn.state_dict()
    if layout == "ghn3":
        prefix = "gnn.0."
        published = collections.OrderedDict()
        for key, value in state.items():
            top_level = key.startswith(prefix) and key[len(prefix) :].split(".")[0] in _GRAPHORMER_TABLES
            published[key[len(prefix) :] if top_level else key] = value
        return pickle.dumps(published, protocol=4)
    if layout == "ppuda":
        cfg = ghn.config
        state_dict = {
            k: v[:, :, None, None]
            if k.startswith(("decoder.conv.", "decoder.class_layer_predictor.")) and v.dim() == 2
            else v
            for k, v in state.items()
        }
        config = dict(
            max_shape=tuple(cfg.max_shape), num_classes=cfg.num_classes, hypernet="gatedgnn", decoder="conv",
            weight_norm=cfg.weight_norm, ve=cfg.virtual_edges, layernorm=cfg.layernorm, hid=cfg.hid,
        )
        buffer = io.BytesIO()
        torch.save({"state_dict": state_dict, "config": config, "epoch": 300}, buffer)
        return buffer.getvalue()
    raise ValueError(f"unknown layout {layout!r}")


def tiny_published_ghn(kind: str = "ghn3", seed: int = 0) -> GHN:
    """A tiny GHN whose config can be read back from its published file (:meth:`GHNConfig.infer`)."""
    if kind == "ghn3":
        return tiny_ghn("ghn3", seed, max_shape=(16, 16, 11, 11), layers=1, heads=8)
    return tiny_ghn("ghn2", seed, max_shape=(16, 16, 11, 11), layers=0, heads=8)


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every tensor of the model's state dict, to compare with later."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_unchanged(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> None:
    """Every state-dict tensor has its snapshot's keys, dtype and values."""
    after = model.state_dict()
    assert after.keys() == before.keys()
    for k, v in before.items():
        assert after[k].dtype == v.dtype and torch.equal(after[k], v), f"{k} changed"
