"""Build a GHN from a checkpoint file or folder, whatever layout it was published in."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch

from ..constants import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME
from ..errors import CheckpointError
from ..networks import GHN, GHNConfig
from .safe_pickle import UnsafeCheckpointError, load_pickle

__all__ = ["CARD_NAME", "CONFIG_NAME", "WEIGHTS_NAME", "ghn_from_state_dict", "load_file", "save_folder"]

FORMAT_VERSION = 1



def ghn_from_state_dict(state_dict: Mapping[str, torch.Tensor], config: Optional[GHNConfig] = None) -> GHN:
    """Instantiate the GHN that ``state_dict`` belongs to (config inferred if not given) and load it."""
    config = config or GHNConfig.infer(state_dict)
    with torch.device("meta"):  # no random init of weights that are overwritten right away
        ghn = GHN(config)
    try:
        ghn.load_published_state_dict(state_dict, strict=True, assign=True)
    except RuntimeError as e:
        raise CheckpointError(f"the weights do not fit a GHN with config {config.to_dict()}: {e}") from e
    return ghn.eval()


def _from_pickle_payload(obj: Any, origin: str) -> GHN:
    if isinstance(obj, Mapping) and "state_dict" in obj:  # ppuda: {'state_dict', 'config', 'epoch'}
        state_dict = obj["state_dict"]
        config = GHNConfig.from_ppuda(obj["config"], state_dict) if "config" in obj else None
    elif isinstance(obj, Mapping) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state_dict, config = obj, None  # GHN-3 Hub files: a bare state dict
    else:
        raise CheckpointError(f"{origin}: expected a GHN state dict, found {type(obj).__name__}")
    ghn = ghn_from_state_dict(state_dict, config)
    ghn.config.extra.setdefault("source", origin)
    return ghn


def load_file(path: Union[str, Path]) -> GHN:
    """A local GHN: a safetensors folder/file (with config.json) or a pickled published checkpoint."""
    path = Path(path)
    if path.is_dir():
        weights, config_file = path / WEIGHTS_NAME, path / CONFIG_NAME
        if not weights.exists():
            raise FileNotFoundError(f"{path} has no {WEIGHTS_NAME}; expected a folder written by `ghn-init convert`")
        return load_safetensors(weights, config_file)
    if not path.exists():
        raise FileNotFoundError(f"no GHN checkpoint at {path}")
    if path.suffix == ".safetensors":
        return load_safetensors(path, path.with_name(CONFIG_NAME))
    try:
        obj = load_pickle(path)
    except UnsafeCheckpointError:
        raise
    except (EOFError, ValueError, pickle.UnpicklingError, RuntimeError) as e:
        raise CheckpointError(
            f"{path} is truncated or corrupted ({type(e).__name__}: {e}); delete it and download it again"
        ) from e
    return _from_pickle_payload(obj, str(path))


def save_folder(
    ghn: GHN,
    folder: Union[str, Path],
    *,
    config: Optional[GHNConfig] = None,
    dtype: Optional[torch.dtype] = None,
    **fields: Any,
) -> Path:
    """Write ``model.safetensors`` and ``config.json`` (``{"format_version", "ghn", **fields}``), the
    folder layout :func:`load_file` reads. The weights appear atomically: never half written."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in ghn.state_dict().items()}
    partial = folder / (WEIGHTS_NAME + ".partial")
    save_file(tensors, str(partial), metadata={"format": "pt", "ghn_init_format_version": str(FORMAT_VERSION)})
    partial.chmod(0o644)  # safetensors may create it owner-only; the folder is meant to be shared
    os.replace(partial, folder / WEIGHTS_NAME)
    doc = {"format_version": FORMAT_VERSION, "ghn": (config or ghn.config).to_dict(), **fields}
    (folder / CONFIG_NAME).write_text(json.dumps(doc, indent=2) + "\n")
    return folder


def load_safetensors(weights: Path, config_file: Path) -> GHN:
    from safetensors.torch import load_file as load_tensors

    try:
        state_dict = load_tensors(str(weights))
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for a bad header
        raise CheckpointError(f"{weights} is not a valid safetensors file ({e}); delete it and fetch it again") from e
    config = None
    if config_file.exists():
        config = GHNConfig.from_dict(json.loads(config_file.read_text())["ghn"])
    return ghn_from_state_dict(state_dict, config)
