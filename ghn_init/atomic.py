"""Write a safetensors file so that it appears whole or not at all, readable like any other file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional, Union

import torch


def save_file_atomic(
    tensors: Mapping[str, torch.Tensor], path: Union[str, Path], metadata: Optional[Mapping[str, str]] = None
) -> Path:
    """``safetensors.torch.save_file`` into ``path.partial``, made world-readable, then renamed onto ``path``.

    A reader never sees a half-written file, and a failure leaves no ``.partial`` behind. (safetensors may
    create files owner-only; a checkpoint is meant to be shared, so it gets mode 0644.)

    Args:
        tensors: contiguous CPU tensors, none sharing storage (safetensors' own requirement).
        path: the file to (re)place.
        metadata: string metadata for the file header.

    Returns:
        ``path``.

    Example:
        >>> import torch, tempfile, os
        >>> p = save_file_atomic({"w": torch.ones(2)}, os.path.join(tempfile.mkdtemp(), "w.safetensors"))
        >>> oct(p.stat().st_mode & 0o777)
        '0o644'
    """
    from safetensors.torch import save_file

    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    try:
        save_file(dict(tensors), str(partial), metadata=dict(metadata) if metadata is not None else None)
        partial.chmod(0o644)
        os.replace(partial, path)
    finally:
        if partial.exists():
            partial.unlink()
    return path
