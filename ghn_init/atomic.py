"""Write a safetensors file so that it appears whole or not at all, readable like any other file, and byte for
byte the same whenever the tensors and metadata are: its sha256 can pin it (``load_ghn(..., sha256=...)``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping, Optional, Union

import torch


def save_file_atomic(
    tensors: Mapping[str, torch.Tensor], path: Union[str, Path], metadata: Optional[Mapping[str, str]] = None
) -> Path:
    """``safetensors.torch.save_file`` into ``path.partial``, made world-readable, then renamed onto ``path``.

    A reader never sees a half-written file, and a failure leaves no ``.partial`` behind. (safetensors may
    create files owner-only; a checkpoint is meant to be shared, so it gets mode 0644.) The header is rewritten
    in a canonical order (see :func:`canonicalize_header`), so equal tensors and metadata give equal files.

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
        canonicalize_header(partial)
        partial.chmod(0o644)
        os.replace(partial, path)
    finally:
        if partial.exists():
            partial.unlink()
    return path


def canonicalize_header(path: Union[str, Path]) -> None:
    """Rewrite the JSON header of the safetensors file ``path`` with sorted keys, in place.

    safetensors keeps the metadata in a hash map and writes it in the map's order, which changes from one process
    (even one call) to the next: two files of identical tensors and metadata then differ in their header bytes
    and in their sha256. The header is ``8 bytes little-endian length N`` + ``N bytes of JSON`` (padded with
    spaces) + the tensor data, whose offsets are relative to the end of the header; sorting the keys leaves the
    JSON's length unchanged, so the new header overwrites the old one and the data is not touched.

    Example: a header ``{"__metadata__":{"b":"2","a":"1"},"w":{...}}`` becomes
    ``{"__metadata__":{"a":"1","b":"2"},"w":{...}}``, same length, same padding.
    """
    with open(path, "r+b") as f:
        length = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(length))
        metadata = header.pop("__metadata__", None)
        canonical = {**({"__metadata__": dict(sorted(metadata.items()))} if metadata is not None else {})}
        canonical.update(sorted(header.items()))
        text = json.dumps(canonical, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) > length:  # cannot happen (the same compact JSON, reordered); then the file stays as written
            return
        f.seek(8)
        f.write(text + b" " * (length - len(text)))
