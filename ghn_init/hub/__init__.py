"""Where GHNs come from: published GHNs by registry name or ``hf://`` URL, local files and folders, and the
GHN bundled with the package.

``load_ghn()`` with no argument loads the best published GHN, GHN-3-XL/m16 (``ghn3-xl-m16``): a ~2.5 GB
download from the Hugging Face Hub on first use, cached by ``huggingface_hub`` afterwards. The small GHN
shipped inside the package is used only when asked for with ``"bundled"``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

import torch

from ..constants import CONFIG_NAME, WEIGHTS_NAME
from ..errors import UnknownGHNError
from ..networks import GHN
from .checkpoints import CheckpointError, load_file
from .download import (
    HF_SCHEME,
    CorruptDownloadError,
    HubDownloadError,
    HubFile,
    HubFileNotFoundError,
    discard_cached,
    parse_hf_url,
)
from .download import download as download_hub_file
from .registry import DEFAULT_GHN, REGISTRY, GHNInfo, RegistryEntry, list_ghns
from .safe_pickle import UnsafeCheckpointError

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "bundled"
BUNDLED = "bundled"

__all__ = [
    "load_ghn",
    "list_ghns",
    "GHNInfo",
    "RegistryEntry",
    "REGISTRY",
    "DEFAULT_GHN",
    "BUNDLED_DIR",
    "CheckpointError",
    "UnsafeCheckpointError",
    "HubDownloadError",
    "CorruptDownloadError",
]

GHNSource = Union[str, Path, GHN, None]

# Loaded GHNs by (resolved file, revision): a second load_ghn of the same file costs nothing, not even a request.
_CACHE: dict[tuple[str, str], GHN] = {}


@dataclass(frozen=True)
class _Resolved:
    key: tuple[str, str]
    load: Callable[[], GHN]


def load_ghn(
    source: GHNSource = None, *, revision: Optional[str] = None, device: Union[str, torch.device, None] = None
) -> GHN:
    """Load a GHN, reusing one already loaded in this process.

    ``source`` is one of:
    - ``None``: the default published GHN, ``"ghn3-xl-m16"`` (about 2.5 GB to download once);
    - a registry name (``ghn_init.list_ghns()`` / ``ghn-init list``), e.g. ``"ghn3-t-m8"`` (27 MB);
    - ``"hf://owner/repo/path/in/repo[@revision]"``: a pickled published checkpoint or a ``model.safetensors``
      written by ``ghn-init convert`` (``hf://owner/repo`` alone means its ``model.safetensors``);
    - a local checkpoint file, or a folder written by ``ghn-init convert``;
    - ``"bundled"``: the small GHN shipped inside the package (no download);
    - a :class:`GHN`, returned as is.
    ``revision`` (branch, tag or commit hash) applies to Hub sources and overrides the registry's default.
    ``device`` moves the GHN there. Hub downloads honour ``HF_HUB_OFFLINE``, ``HF_ENDPOINT``, ``HF_TOKEN`` and
    the ``huggingface_hub`` cache; pickled files are read without executing code from them.
    """
    if isinstance(source, GHN):
        return source.to(torch.device(device)) if device is not None else source
    resolved = _resolve(DEFAULT_GHN if source is None else source, revision)
    ghn = _CACHE.get(resolved.key)
    if ghn is None:
        ghn = resolved.load()
        _CACHE[resolved.key] = ghn
    return ghn.to(torch.device(device)) if device is not None else ghn


def _resolve(source: Union[str, Path], revision: Optional[str]) -> _Resolved:
    text = str(source)
    if text == BUNDLED:
        _no_revision(text, revision)
        return _Resolved((str(BUNDLED_DIR), _fingerprint(BUNDLED_DIR)), _load_bundled)
    if text.startswith(HF_SCHEME):
        file = parse_hf_url(text)
        if revision is not None:
            if "@" in text and file.revision != revision:
                raise ValueError(f"{text!r} names revision {file.revision!r} but revision={revision!r} was also given")
            file = HubFile(file.repo_id, file.filename, revision)
        return _Resolved((_hub_key(file), file.revision), lambda: _load_from_hub(file))
    if isinstance(source, str) and source in REGISTRY:
        entry = REGISTRY[source]
        if not entry.on_hub:
            raise FileNotFoundError(entry.local_only_hint())
        file = HubFile(entry.repo_id, entry.filename, revision or entry.revision)  # type: ignore[arg-type]
        return _Resolved((_hub_key(file), file.revision), lambda: _load_from_hub(file, entry))
    path = Path(source).expanduser()
    if path.exists():
        _no_revision(text, revision)
        path = path.resolve()
        return _Resolved((str(path), _fingerprint(path)), lambda: load_file(path))
    raise UnknownGHNError(_unknown_source_message(text), source=text)


def _load_bundled() -> GHN:
    if not BUNDLED_DIR.exists():
        raise FileNotFoundError(
            f"this installation of ghn-init has no bundled GHN ({BUNDLED_DIR} is missing). Use a published GHN "
            f"instead, e.g. ghn='ghn3-t-m8' (27 MB download) or the default ghn=None ({DEFAULT_GHN})."
        )
    ghn = load_file(BUNDLED_DIR)
    ghn.config.extra.setdefault("name", BUNDLED)
    return ghn


def _load_from_hub(file: HubFile, entry: Optional[RegistryEntry] = None) -> GHN:
    path = download_hub_file(file, size_hint=entry.download_size if entry else None)
    if path.suffix == ".safetensors":
        _fetch_config_next_to(file, path)
    try:
        ghn = load_file(path)
    except ValueError as e:  # CheckpointError and config errors; an UnsafeCheckpointError propagates unchanged
        discard_cached(path)
        raise CheckpointError(
            f"{file.describe()} was downloaded but cannot be loaded as a GHN: {e}. The cached copy was removed, "
            "so the next call downloads it again; if that fails the same way, the file is not a GHN checkpoint."
        ) from e
    if ghn.config.extra.get("source") in (None, str(path)):
        ghn.config.extra["source"] = str(file)
    if entry is not None:
        ghn.config.extra["name"] = entry.name
    return ghn


def _fetch_config_next_to(file: HubFile, weights: Path) -> None:
    """Download the ``config.json`` written by ``ghn-init convert`` into the same cached snapshot as the weights."""
    from huggingface_hub import try_to_load_from_cache

    snapshot_commit = weights.parents[len(Path(file.filename).parts) - 1].name
    config = file.sibling(CONFIG_NAME, revision=snapshot_commit)
    if try_to_load_from_cache(config.repo_id, config.filename, revision=config.revision) is not None:
        return  # cached, or cached as absent
    try:
        download_hub_file(config)
    except HubFileNotFoundError:
        pass  # a bare safetensors file: the config is inferred from its tensor shapes


def _hub_key(file: HubFile) -> str:
    return f"{HF_SCHEME}{file.repo_id}/{file.filename}"


def _fingerprint(path: Path) -> str:
    """Changes when the file (or a folder's weights/config) is rewritten, so a stale GHN is not reused."""
    files = [path / WEIGHTS_NAME, path / CONFIG_NAME] if path.is_dir() else [path]
    return ",".join(str(f.stat().st_mtime_ns) for f in files if f.exists())


def _no_revision(source: str, revision: Optional[str]) -> None:
    if revision is not None:
        raise ValueError(f"revision={revision!r} applies to Hub sources only, not to {source!r}")


def _unknown_source_message(source: str) -> str:
    close = difflib.get_close_matches(source, list(REGISTRY), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return (
        f"unknown GHN source {source!r}: not a registry name, an existing file or folder, an hf:// URL or "
        f"'bundled'.{hint} Registry names: {', '.join(REGISTRY)}."
    )
