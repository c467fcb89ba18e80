"""Where GHNs come from: the bundled GHN, local files, and (registry/``hf://``) the Hugging Face Hub."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import torch

from ..networks import GHN
from .checkpoints import CheckpointError, load_file
from .safe_pickle import UnsafeCheckpointError

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "bundled"

__all__ = ["load_ghn", "CheckpointError", "UnsafeCheckpointError", "BUNDLED_DIR"]

_CACHE: dict[tuple[str, str], GHN] = {}


def load_ghn(source: Union[str, Path, GHN, None] = None, *, revision: Optional[str] = None, device=None) -> GHN:
    """Load a GHN: ``"bundled"``, a local file or folder. Loaded GHNs are reused across calls."""
    if isinstance(source, GHN):
        return source.to(device) if device is not None else source
    if source is None:
        source = "bundled"
    key = (str(source), str(revision))
    ghn = _CACHE.get(key)
    if ghn is None:
        if str(source) == "bundled":
            ghn = load_file(BUNDLED_DIR)
            ghn.config.extra.setdefault("name", "bundled")
        elif Path(source).exists():
            ghn = load_file(source)
        else:
            raise FileNotFoundError(f"unknown GHN source {source!r}: not 'bundled' and not an existing path")
        _CACHE[key] = ghn
    return ghn.to(torch.device(device)) if device is not None else ghn
