"""Build a GHN from a checkpoint file or folder, whatever layout it was published in."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch

from ..atomic import save_file_atomic
from ..constants import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME
from ..errors import (
    CheckpointError,
    CheckpointNotFoundError,
    ConfigError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    UnsupportedDtypeError,
)
from ..networks import GHN, GHNConfig
from ..networks.config import json_repr
from .download import file_sha256
from .safe_pickle import UnsafeCheckpointError, check_regular_file, load_pickle

__all__ = ["CARD_NAME", "CONFIG_NAME", "WEIGHTS_NAME", "ghn_from_state_dict", "load_file", "save_folder"]

FORMAT_VERSION = 1  # the newest config.json layout this version reads
MAX_CONFIG_BYTES = 1 << 20  # a config.json is a few KB



# dtypes a GHN's weights can be loaded and run in; float8 loads but fails in apply (no float8 matmul on CPU)
SUPPORTED_DTYPES = frozenset({torch.float32, torch.float16, torch.bfloat16, torch.float64})


def check_dtypes(
    state_dict: Mapping[str, torch.Tensor],
    origin: Optional[Any] = None,
    fix: str = "convert the checkpoint to float32, float16 or bfloat16 with the code that wrote it",
) -> None:
    """Refuse GHN weights of a dtype a GHN cannot run in (float8, integers, complex, bool).

    Raises:
        UnsupportedDtypeError: one line naming the file (``origin``), a tensor and its dtype; ``.dtypes`` lists all.

    Example:
        >>> try:
        ...     check_dtypes({"embed.weight": torch.zeros(2, dtype=torch.float8_e4m3fn)})
        ... except UnsupportedDtypeError as e:
        ...     print(e.dtypes)
        {'embed.weight': 'float8_e4m3fn'}
    """
    unsupported = {k: v.dtype for k, v in state_dict.items() if v.dtype not in SUPPORTED_DTYPES}
    if unsupported:
        name, dtype = next(iter(unsupported.items()))
        where = f"{origin}: " if origin is not None else ""
        raise UnsupportedDtypeError(
            f"{where}{len(unsupported)} GHN tensors have a dtype a GHN cannot run in (e.g. {name}: {dtype}); {fix}",
            path=origin,
            dtypes={k: str(v).replace("torch.", "") for k, v in unsupported.items()},
        )


def ghn_from_state_dict(
    state_dict: Mapping[str, torch.Tensor], config: Optional[GHNConfig] = None, origin: Optional[Any] = None
) -> GHN:
    """Instantiate the GHN that ``state_dict`` belongs to (config inferred if not given) and load it.

    Raises:
        CheckpointError: the tensors are not those of a GHN (or not of one with ``config``), or some are of a dtype
            a GHN cannot run in (float8, integers, complex: refused here, not later in ``apply``).
    """
    check_dtypes(state_dict, origin)
    if config is None:
        try:
            config = GHNConfig.infer(state_dict)
        except CheckpointError:
            raise
        except (KeyError, IndexError, TypeError, AttributeError, ValueError) as e:
            raise CheckpointError(f"the tensors are not those of a GHN-2/GHN-3 ({type(e).__name__}: {e})") from None
    with torch.device("meta"):  # no random init of weights that are overwritten right away
        ghn = GHN(config)
    try:
        ghn.load_published_state_dict(state_dict, strict=True, assign=True)
    except (RuntimeError, AttributeError, TypeError) as e:
        raise CheckpointError(f"the weights do not fit a GHN with config {config.to_dict()}: {e}") from e
    return ghn.eval()


def _from_pickle_payload(obj: Any, origin: str) -> GHN:
    is_state_dict = lambda d: isinstance(d, Mapping) and all(isinstance(v, torch.Tensor) for v in d.values())  # noqa: E731
    if isinstance(obj, Mapping) and "state_dict" in obj and is_state_dict(obj["state_dict"]):  # ppuda layout
        state_dict = obj["state_dict"]
        config = None
        if "config" in obj:
            if not isinstance(obj["config"], Mapping):
                kind = type(obj["config"]).__name__
                raise CheckpointError(f"{origin}: its 'config' is a {kind}, not a dict", path=origin)
            try:
                config = GHNConfig.from_ppuda(obj["config"], state_dict)
            except CheckpointError:
                raise
            except (KeyError, IndexError, TypeError, ValueError) as e:
                message = f"{origin}: unreadable ppuda config ({type(e).__name__}: {e})"
                raise CheckpointError(message, path=origin) from None
    elif is_state_dict(obj):
        state_dict, config = obj, None  # GHN-3 Hub files: a bare state dict
    else:
        raise CheckpointError(f"{origin}: expected a GHN state dict, found {type(obj).__name__}", path=origin)
    ghn = ghn_from_state_dict(state_dict, config, origin=origin)
    ghn.config.extra.setdefault("source", origin)
    return ghn


def weights_file(path: Union[str, Path]) -> Path:
    """The file holding the weights of a GHN source path: a folder's ``model.safetensors``, else the path itself."""
    path = Path(path)
    return path / WEIGHTS_NAME if path.is_dir() else path


def source_files(path: Union[str, Path]) -> list[Path]:
    """Every file :func:`load_file` may read for ``path``: a folder's ``model.safetensors`` and ``config.json``,
    a ``.safetensors`` file and the ``config.json`` beside it, or the checkpoint file itself (some may not exist).

    Example:
        >>> from ghn_init.hub import BUNDLED_DIR
        >>> [p.name for p in source_files(BUNDLED_DIR)]
        ['model.safetensors', 'config.json']
    """
    path = Path(path)
    if path.is_dir():
        return [path / WEIGHTS_NAME, path / CONFIG_NAME]
    return [path, path.with_name(CONFIG_NAME)] if path.suffix == ".safetensors" else [path]


def parse_sha256(text: str) -> str:
    """``text`` as a sha256 digest: 64 lower-case hexadecimal digits (surrounding spaces and upper case are fine).

    Raises:
        ValueError: ``text`` is not a sha256 digest.

    Example:
        >>> parse_sha256(" " + "AB" * 32) == "ab" * 32
        True
    """
    if not isinstance(text, str):
        raise InvalidArgumentTypeError(
            f"sha256 must be a string of 64 hexadecimal digits, got {type(text).__name__}",
            argument="sha256",
            value=text,
        )
    digest = text.strip().lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise InvalidArgumentError(f"sha256 must be 64 hexadecimal digits, got {text!r}", argument="sha256", value=text)
    return digest


def check_sha256(path: Union[str, Path], expected: str) -> None:
    """Compare the sha256 of the weights at ``path`` (a file, or a folder's ``model.safetensors``) with ``expected``.

    Args:
        path: a checkpoint file or a folder written by ``ghn-init convert``.
        expected: 64 hexadecimal digits.

    Raises:
        ValueError: ``expected`` is not a sha256 digest.
        CheckpointError: the file's digest differs (it was altered, truncated or is another file).

    Example:
        >>> check_sha256("ghn3tm8.pt", "0" * 64)  # doctest: +SKIP
    """
    expected = parse_sha256(expected)
    file = weights_file(path)
    check_regular_file(file)
    digest = file_sha256(file)
    if digest.hexdigest() != expected:
        raise CheckpointError(
            f"{file} has sha256 {digest.hexdigest()}, not the expected {expected}: the file was altered, truncated "
            "or is another file. Fetch it again, or drop sha256= if the change is intended.",
            path=file,
        )


def load_file(path: Union[str, Path]) -> GHN:
    """A local GHN: a safetensors folder/file (with config.json) or a pickled published checkpoint.

    Args:
        path: a folder written by ``ghn-init convert`` / training export, a ``.safetensors`` file (its
            ``config.json`` next to it is read if present), or a pickled checkpoint.

    Returns:
        The GHN, on the CPU, in eval mode.

    Raises:
        CheckpointNotFoundError: nothing at ``path``, or a folder without ``model.safetensors`` (also a
            ``FileNotFoundError``).
        CheckpointError: not a regular file, too large, truncated, corrupted or not a GHN.
        ConfigError: its ``config.json`` is invalid (``.field`` names the key).
        UnsafeCheckpointError: a pickle that names anything but tensors and containers.

    Example:
        >>> from ghn_init.hub import BUNDLED_DIR
        >>> load_file(BUNDLED_DIR).config.kind
        'ghn3'
    """
    path = Path(path)
    if path.is_dir():
        weights, config_file = path / WEIGHTS_NAME, path / CONFIG_NAME
        if not weights.exists():
            raise CheckpointNotFoundError(
                f"{path} is a folder without {WEIGHTS_NAME}; pass a GHN checkpoint file or a folder written by "
                "`ghn-init convert` or `ghn-init train`",
                path=path,
            )
        return load_safetensors(weights, config_file)
    check_regular_file(path)
    if path.suffix == ".safetensors":
        return load_safetensors(path, path.with_name(CONFIG_NAME))
    try:
        obj = load_pickle(path)
    except (UnsafeCheckpointError, CheckpointError):
        raise
    except (EOFError, ValueError, pickle.UnpicklingError, RuntimeError, OSError, MemoryError) as e:
        raise CheckpointError(
            f"{path} is not a GHN checkpoint, or is truncated or corrupted ({type(e).__name__}: {e})", path=path
        ) from e
    return _from_pickle_payload(obj, str(path))


def read_config(config_file: Union[str, Path]) -> GHNConfig:
    """The GHN config in a ``config.json`` written by ``ghn-init convert`` or training export.

    Args:
        config_file: the ``config.json``: ``{"format_version": 1, "ghn": {...}, ...}``.

    Returns:
        The checked config.

    Raises:
        ConfigError: not JSON, no ``"ghn"`` object, a ``format_version`` newer than this version reads,
            or a missing, unknown or mistyped field; ``.field`` names the key and the message names the file.

    Example:
        >>> from ghn_init.hub import BUNDLED_DIR
        >>> read_config(BUNDLED_DIR / "config.json").num_classes
        10
    """
    config_file = Path(config_file)
    try:
        check_regular_file(config_file, MAX_CONFIG_BYTES, what="config.json")
        doc = json.loads(config_file.read_text(encoding="utf-8"))
    except CheckpointError as e:
        raise ConfigError(str(e), path=config_file) from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ConfigError(f"{config_file} is not valid JSON ({e})", path=config_file) from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{config_file} must hold a JSON object, got {json_repr(doc)}", path=config_file)
    version = doc.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ConfigError(
            f"{config_file}: format_version must be a positive integer, got {json_repr(version)}",
            path=config_file,
            field="format_version",
        )
    if version > FORMAT_VERSION:
        raise ConfigError(
            f"{config_file} has format_version {version}, but this ghn-init reads up to {FORMAT_VERSION}; "
            "upgrade ghn-init (pip install -U ghn-init) to load it",
            path=config_file,
            field="format_version",
        )
    if "ghn" not in doc:
        message = f"{config_file} has no \"ghn\" section with the GHN's hyperparameters"
        raise ConfigError(message, path=config_file, field="ghn")
    return GHNConfig.from_dict(doc["ghn"], origin=str(config_file))


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
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in ghn.state_dict().items()}
    metadata = {"format": "pt", "ghn_init_format_version": str(FORMAT_VERSION)}
    save_file_atomic(tensors, folder / WEIGHTS_NAME, metadata)
    doc = {"format_version": FORMAT_VERSION, "ghn": (config or ghn.config).to_dict(), **fields}
    (folder / CONFIG_NAME).write_text(json.dumps(doc, indent=2) + "\n")
    return folder


def load_safetensors(weights: Path, config_file: Path) -> GHN:
    """A GHN from a ``model.safetensors`` and, if it exists, the ``config.json`` describing it."""
    from safetensors.torch import load_file as load_tensors

    check_regular_file(weights)
    try:
        state_dict = load_tensors(str(weights))
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for a bad header
        raise CheckpointError(f"{weights} is not a valid safetensors file ({e}); delete it and fetch it again") from e
    config = read_config(config_file) if config_file.exists() else None
    return ghn_from_state_dict(state_dict, config, origin=weights)
