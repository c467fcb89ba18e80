"""Read pickled checkpoints without running code from them.

Published GHN files are pickles: ppuda's are ``torch.save`` archives, the GHN-3 Hub files are
``joblib.dump`` streams of a state dict (tensors pickled through ``torch.storage._load_from_bytes``).
A plain ``pickle.load`` or ``joblib.load`` would import and call whatever the file names. Here the
unpickler resolves only a fixed list of harmless names (containers, tensor rebuilders, dtypes); any
other name raises :class:`UnsafeCheckpointError` before anything is called.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from pathlib import Path
from typing import Any, Callable, Union

import torch

from ..errors import UnsafeCheckpointError


def _storage_from_bytes(data: bytes) -> Any:
    # The bytes are a nested torch.save of one storage; torch's own weights-only loader reads it.
    return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")


_ALLOWED: dict[tuple[str, str], Callable[..., Any]] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,  # type: ignore[attr-defined]
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,  # type: ignore[attr-defined]
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
    ("torch", "Size"): torch.Size,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "complex"): complex,
}
for _dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32, torch.bool):
    _ALLOWED[("torch", str(_dtype).split(".")[-1])] = lambda d=_dtype: d  # dtypes pickle by name


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and hasattr(torch, name) and isinstance(getattr(torch, name), torch.dtype):
            return getattr(torch, name)
        found = _ALLOWED.get((module, name))
        if found is None:
            raise UnsafeCheckpointError(
                f"refusing to load {module}.{name} from a checkpoint: only tensors and plain containers "
                "are read. If you trust this file, convert it once with the code that wrote it "
                "(e.g. save its state dict with safetensors) and load the result."
            )
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeCheckpointError(f"unexpected persistent id {pid!r} in a plain pickle stream")


PathLike = Union[str, Path]


def load_pickle(path: PathLike) -> Any:
    """Load a ``torch.save`` archive or a plain (joblib) pickle, allowing only tensors and containers."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(4)
    if zipfile.is_zipfile(path):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise UnsafeCheckpointError(f"{path}: {e}") from e
    if head[:1] != b"\x80":
        raise pickle.UnpicklingError(f"{path} is neither a torch.save archive nor a pickle (starts with {head!r})")
    with open(path, "rb") as f:
        obj = _RestrictedUnpickler(f).load()
        if _looks_like_legacy_torch_save(obj):
            try:
                return torch.load(path, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError as e:
                raise UnsafeCheckpointError(f"{path}: {e}") from e
    return obj


def _looks_like_legacy_torch_save(obj: Any) -> bool:
    # Legacy (pre-1.6) torch.save files start with a pickled magic number.
    return isinstance(obj, int) and obj == 0x1950A86A20F9469CFC6C
