"""Save an initialized model as a real ``.safetensors`` file, with what ``apply`` did stored as metadata.

The file is a plain safetensors state dict (``{"format": "pt"}`` metadata, every key of
``model.state_dict()``), so ``timm.create_model(..., pretrained_cfg_overlay=dict(file=path))``,
``safetensors.torch.load_file`` and ``transformers``-style loaders read it as they read any checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch
import torch.nn as nn

from .atomic import save_file_atomic
from .outputs import deepest_existing
from .report import Report

REPORT_KEY = "ghn_init_report"  # metadata key holding the report as JSON


def save_safetensors(
    model: Union[nn.Module, Mapping[str, torch.Tensor]],
    path: Union[str, Path],
    report: Optional[Report] = None,
    *,
    metadata: Optional[Mapping[str, str]] = None,
) -> Path:
    """Write ``model``'s state dict to ``path`` in the safetensors format, atomically.

    Tensors shared between several keys (tied weights) are stored once per key, so every key of the
    state dict is in the file and ``model.load_state_dict(load_file(path))`` works with ``strict=True``.

    Args:
        model: an ``nn.Module`` (its ``state_dict()`` is written) or a state dict.
        path: the file to write (conventionally ``*.safetensors``); its folder must exist. The file appears
            whole or not at all.
        report: the :class:`Report` of :func:`ghn_init.apply`, stored as JSON under the metadata key
            ``"ghn_init_report"``.
        metadata: more string metadata to store (``"format": "pt"`` is always set).

    Returns:
        ``path``.

    Raises:
        FileNotFoundError: the folder of ``path`` does not exist.
        IsADirectoryError: ``path`` is a folder.
        NotADirectoryError: a part of the folder of ``path`` is a file.
        TypeError: ``metadata`` has non-string keys or values.

    Example:
        >>> import ghn_init, torchvision, tempfile, os
        >>> from safetensors import safe_open
        >>> model = torchvision.models.resnet18()
        >>> path = ghn_init.save_safetensors(model, os.path.join(tempfile.mkdtemp(), "r18.safetensors"),
        ...                                  ghn_init.apply(model, "bundled", postprocess="none"))
        >>> with safe_open(str(path), "pt") as f:
        ...     "ghn_init_report" in f.metadata()
        True
    """
    from . import __version__

    path = Path(path)
    check_save_path(path)
    info = {"format": "pt", "ghn_init_version": __version__}
    if report is not None:
        info[REPORT_KEY] = json.dumps(report.to_dict())
    for k, v in (metadata or {}).items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(f"safetensors metadata must map strings to strings, got {k!r}: {type(v).__name__}")
        info[k] = v
    state = model.state_dict() if isinstance(model, nn.Module) else dict(model)
    tensors: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for name, t in state.items():
        t = t.detach()
        key = (t.untyped_storage().data_ptr(), t.device.index or 0) if t.numel() else (id(t), 0)
        shared = key in seen
        seen.add(key)
        # safetensors refuses shared or non-contiguous storage: give each key its own contiguous copy
        if shared or t.device.type != "cpu":  # one copy, straight into contiguous CPU memory
            tensors[name] = t.to("cpu", copy=True, memory_format=torch.contiguous_format)
        else:
            tensors[name] = t.contiguous()
    return save_file_atomic(tensors, path, info)


def read_report(path: Union[str, Path]) -> Optional[dict[str, Any]]:
    """The report stored by :func:`save_safetensors` in ``path``, or None if it has none.

    Example:
        >>> read_report("resnet18.safetensors")["fraction_predicted"]  # doctest: +SKIP
        1.0
    """
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        text = (f.metadata() or {}).get(REPORT_KEY)
    return json.loads(text) if text else None


def check_save_path(path: Union[str, Path]) -> None:
    """Fail before any work if ``path`` cannot be written: its folder is missing or it is a folder.

    Raises:
        FileNotFoundError: the folder of ``path`` does not exist.
        IsADirectoryError: ``path`` is a folder.
        NotADirectoryError: a part of the folder of ``path`` is a file.
        PermissionError: the folder is not writable.
    """
    path = Path(path)
    folder = path.parent
    if path.is_dir():
        raise IsADirectoryError(
            f"cannot save to {path}: it is a folder; pass a file path such as {path / 'model.safetensors'}"
        )
    if not folder.is_dir():
        above = deepest_existing(folder)
        if above.exists() and not above.is_dir():
            raise NotADirectoryError(f"cannot save to {path}: {above} is a file, not a folder; pass a path in a folder")
        raise FileNotFoundError(f"cannot save to {path}: the folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"cannot save to {path}: the folder {folder} is not writable")
