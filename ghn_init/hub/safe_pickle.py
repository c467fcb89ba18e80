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
import re
import zipfile
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch

from ..errors import UnsafeCheckpointError

SAFE_ADVICE = (
    "nothing from the file was run; only tensors and plain containers are read. If you trust the file, load it "
    "with the code that wrote it, save its state dict with safetensors and load that"
)


def torch_refusal(error: BaseException) -> Optional[str]:
    """What torch's weights-only loader refused, in our words, or None if ``error`` is not such a refusal.

    torch's message spans several lines and advises ``weights_only=False`` (running the file's code) or
    ``torch.serialization.add_safe_globals`` (allowing the refused object); none of its text is passed on, only the
    name of the refused global or pickle opcode, so no message of ours carries that advice.

    Example:
        >>> torch_refusal(pickle.UnpicklingError("Weights only load failed. Re-running with weights_only=False ... "
        ...               "Trying to load unsupported GLOBAL posix.system whose module posix is blocked."))
        'it names posix.system, which is not a tensor or a plain container'
        >>> torch_refusal(pickle.UnpicklingError("WeightsUnpickler error: Unsupported global: GLOBAL os.system was "
        ...               "not an allowed global by default. Please use torch.serialization.add_safe_globals ..."))
        'it names os.system, which is not a tensor or a plain container'
    """
    text = str(error)
    found = re.search(r"GLOBAL\s+([\w.]+)", text)
    if found:
        return f"it names {found[1].rstrip('.')}, which is not a tensor or a plain container"
    found = re.search(r"Unsupported operand\s+(\d+)", text)
    if found:
        return f"it uses pickle opcode {found[1]}, which tensors and plain containers do not need"
    if re.search(r"unsupported|not an allowed", text, re.IGNORECASE):
        return "it names objects that are not tensors or plain containers"
    return None


def _unsafe(where: Any, error: BaseException, path: Any = None) -> UnsafeCheckpointError:
    reason = (torch_refusal(error) or "it names objects that are not tensors or plain containers").rstrip(".")
    return UnsafeCheckpointError(f"refusing to load {where}: {reason}; {SAFE_ADVICE}", path=path)


def load_weights_only(path: Any) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, a refusal raised as :class:`UnsafeCheckpointError` in our
    words (torch's own text advises ``weights_only=False``, i.e. running the file's code).

    Raises:
        UnsafeCheckpointError: the file names objects torch's weights-only loader does not allow; nothing was run.

    Example:
        >>> import torch, tempfile, os
        >>> f = os.path.join(tempfile.mkdtemp(), "state.pt"); torch.save({"step": 3}, f)
        >>> load_weights_only(f)
        {'step': 3}
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if torch_refusal(e) is not None:
            raise _unsafe(path, e, path) from None
        raise


def _storage_from_bytes(data: bytes) -> Any:
    # The bytes are a nested torch.save of one storage; torch's own weights-only loader reads it. A payload
    # hidden in them is refused as unsafe, not reported as a corrupted file.
    try:
        return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as e:
        if torch_refusal(e) is not None:
            raise _unsafe("a tensor record nested in the checkpoint (torch.storage._load_from_bytes)", e) from None
        raise


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


# The pure-Python unpickler, not the C one: on a corrupted stream whose BYTEARRAY8 opcode claims an
# impossible length (e.g. 7e18 bytes), CPython 3.11's C unpickler raises MemoryError *and* prints
# "SystemError: deallocated bytearray object has exported buffers" straight to stderr (a stray line no
# caller can catch, which broke the CLI's one-line errors on ~1 in 4,000 random files). The Python
# unpickler fails cleanly with MemoryError, and it reads a GHN state dict (a few thousand opcodes, each
# tensor one large bytes record read in one call) as fast: 0.03 s vs 0.09 s for the GHN-3-T fixture.
class _RestrictedUnpickler(pickle._Unpickler):  # type: ignore[name-defined]
    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and hasattr(torch, name) and isinstance(getattr(torch, name), torch.dtype):
            return getattr(torch, name)
        found = _ALLOWED.get((module, name))
        if found is None:
            raise UnsafeCheckpointError(f"refusing to load {module}.{name} from a checkpoint; {SAFE_ADVICE}")
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeCheckpointError(f"unexpected persistent id {pid!r} in a plain pickle stream")


PathLike = Union[str, Path]

ZIP_MAGIC = b"PK\x03\x04"  # a torch.save archive starts with its first local file header
PICKLE_PROTO = b"\x80"  # pickles of protocol 2 and later (torch.save, joblib) start with PROTO
# Larger than any published GHN (GHN-3-XL/m16 is about 2.5 GB); a bigger file is refused before it is read.
MAX_CHECKPOINT_BYTES = 8 << 30


def check_regular_file(path: Path, max_bytes: int = MAX_CHECKPOINT_BYTES, what: str = "checkpoint") -> int:
    """The size of ``path`` after checking it is a regular file of at most ``max_bytes``.

    Reading a device (``/dev/zero``), a pipe or a huge unrelated file would otherwise never end or exhaust
    memory; this refuses them before a byte is read.

    Raises:
        CheckpointNotFoundError: nothing at ``path`` (also a ``FileNotFoundError``).
        CheckpointError: ``path`` is not a regular file, or is larger than ``max_bytes``.
    """
    from ..errors import CheckpointError, CheckpointNotFoundError

    if not path.exists():
        raise CheckpointNotFoundError(f"no GHN {what} at {path}", path=path)
    if not path.is_file():
        message = f"{path} is not a regular file (a device, pipe or socket?); pass a GHN {what} file"
        raise CheckpointError(message, path=path)
    size = path.stat().st_size
    if size > max_bytes:
        raise CheckpointError(
            f"{path} is {size:,} bytes, more than the {max_bytes:,} bytes a GHN {what} may have; "
            "is it really a GHN checkpoint?",
            path=path,
        )
    return size


def _check_zip_records(path: Path, size: int) -> None:
    """Refuse an archive whose records are compressed or claim more bytes than the file holds.

    ``torch.save`` stores every record uncompressed, so the records' sizes add up to less than the file;
    checking the central directory first means nothing is inflated before the archive is refused.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            records = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        message = f"{path} starts like a torch.save archive but is not a readable zip file ({e})"
        raise pickle.UnpicklingError(message) from e
    declared = 0
    for record in records:
        if record.compress_type != zipfile.ZIP_STORED:
            raise pickle.UnpicklingError(
                f"{path}: record {record.filename!r} is compressed; torch.save archives store records uncompressed, "
                "so this is not one"
            )
        declared += record.file_size
    if declared > size:
        raise pickle.UnpicklingError(
            f"{path}: its records claim {declared:,} bytes but the file has {size:,}; the archive is corrupted"
        )


def load_pickle(path: PathLike) -> Any:
    """Load a ``torch.save`` archive or a plain (joblib) pickle, allowing only tensors and containers.

    The format is told from the file's first bytes (zip magic ``PK\\x03\\x04`` or pickle ``PROTO``), never
    from bytes further in, which may be tensor data.

    Args:
        path: a regular file of at most :data:`MAX_CHECKPOINT_BYTES`.

    Returns:
        The unpickled object (tensors and plain containers only).

    Raises:
        UnsafeCheckpointError: the file names anything but tensors and plain containers; nothing was run.
        pickle.UnpicklingError: the file is neither a torch.save archive nor a pickle.
        CheckpointError: not a regular file, or too large.

    Example:
        >>> import torch, tempfile, os
        >>> f = os.path.join(tempfile.mkdtemp(), "sd.pt"); torch.save({"w": torch.ones(2)}, f)
        >>> load_pickle(f)["w"]
        tensor([1., 1.])
    """
    path = Path(path)
    size = check_regular_file(path)
    with open(path, "rb") as f:
        head = f.read(4)
    if head == ZIP_MAGIC:
        _check_zip_records(path, size)
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except UnsafeCheckpointError:
            raise
        except pickle.UnpicklingError as e:
            raise _unsafe(path, e, path) from None
    if head[:1] != PICKLE_PROTO:
        raise pickle.UnpicklingError(f"{path} is neither a torch.save archive nor a pickle (starts with {head!r})")
    with open(path, "rb") as f:
        try:
            obj = _RestrictedUnpickler(f).load()
        except UnsafeCheckpointError as e:  # nothing was run; say which file
            raise (e if e.path is not None else UnsafeCheckpointError(f"{path}: {e}", path=path)) from None
        except pickle.UnpicklingError:
            raise
        except Exception as e:  # noqa: BLE001 - a corrupted stream fails in many ways: OverflowError, IndexError,
            # KeyError, MemoryError on an absurd length, RecursionError on deep nesting, ...
            raise pickle.UnpicklingError(f"{path} is not a valid pickle ({type(e).__name__}: {e})") from e
        if _looks_like_legacy_torch_save(obj):
            try:
                return torch.load(path, map_location="cpu", weights_only=True)
            except UnsafeCheckpointError:
                raise
            except pickle.UnpicklingError as e:
                raise _unsafe(path, e, path) from None
    return obj


def _looks_like_legacy_torch_save(obj: Any) -> bool:
    # Legacy (pre-1.6) torch.save files start with a pickled magic number.
    return isinstance(obj, int) and obj == 0x1950A86A20F9469CFC6C
