"""Where GHNs come from: published GHNs by registry name or ``hf://`` URL, local files and folders, and the
GHN bundled with the package.

``load_ghn()`` with no argument loads the best published GHN, GHN-3-XL/m16 (``ghn3-xl-m16``): a ~2.5 GB
download from the Hugging Face Hub on first use, cached by ``huggingface_hub`` afterwards. The small GHN
shipped inside the package is used only when asked for with ``"bundled"``.
"""

from __future__ import annotations

import difflib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

import torch

from ..constants import CONFIG_NAME
from ..errors import CheckpointNotFoundError, ConfigError, InvalidArgumentError, UnknownGHNError
from ..log import logger
from ..networks import GHN
from ..validation import check_flag, check_ghn_source, check_hub_options, check_revision
from .checkpoints import (
    CheckpointError,
    check_dtypes,
    check_sha256,
    load_file,
    parse_sha256,
    source_files,
    weights_file,
)
from .copies import discard_copies, inference_copy, parse_device
from .download import (
    HF_SCHEME,
    CorruptDownloadError,
    HubDownloadError,
    HubFile,
    HubFileNotFoundError,
    discard_cached,
    file_sha256,
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


@dataclass
class _Entry:
    """A loaded GHN and the files it was read from."""

    ghn: GHN
    path: Path  # the local file or folder (for Hub sources, the cached file) it was read from
    stamp: tuple  # _stamp(path) just before it was read
    sha256: Optional[str] = None  # of its weights file, once known (checked when read, or hashed on a later check)


# One loaded GHN per source: per resolved local path, or per (Hub file, revision, cache folder). A second
# load_ghn of the same source costs nothing, not even a request; a local file that changed on disk replaces
# its entry. GHNs stay on the CPU where they were loaded; other devices get copies (see copies.py).
_CACHE: dict[tuple[str, ...], _Entry] = {}
_LOCK = threading.Lock()  # guards _KEY_LOCKS
_KEY_LOCKS: dict[tuple[str, ...], threading.Lock] = {}  # two threads asking for the same GHN load it once


def _lock_for(key: tuple[str, ...]) -> threading.Lock:
    with _LOCK:
        return _KEY_LOCKS.setdefault(key, threading.Lock())


@dataclass(frozen=True)
class _Resolved:
    key: tuple[str, ...]
    locate: Callable[[], Path]  # the local file or folder (downloading it if needed)
    load: Callable[[Path], GHN]
    local: bool = False  # a local file or folder: a cached GHN is reused only while its files are unchanged


@dataclass(frozen=True)
class _HubOptions:
    local_files_only: bool = False
    cache_dir: Union[str, Path, None] = None
    token: Union[str, bool, None] = None


def load_ghn(
    source: GHNSource = None,
    *,
    revision: Optional[str] = None,
    device: Union[str, torch.device, None] = None,
    local_files_only: bool = False,
    cache_dir: Union[str, Path, None] = None,
    token: Union[str, bool, None] = None,
    sha256: Optional[str] = None,
) -> GHN:
    """Load a GHN, reusing one already loaded in this process.

    Sharing rule: the GHN returned is shared by every caller that loads the same source in this process
    (and by ``apply``/``predict``), so treat it as read-only: do not move it (``.to``), switch its mode or
    train it in place; ``copy.deepcopy(ghn)`` first to fine-tune or modify it. ghn-init itself never moves,
    mode-switches or modifies a GHN it is given, or one it loaded: with ``device``, and in ``apply`` on a
    model on another device, it uses a copy on that device (built once, cached, shared the same way), so
    one call on a ``"meta"`` model, or ``load_ghn(..., device="meta")``, does not affect any other call.
    Loading is thread-safe, and so are concurrent ``apply`` calls sharing one GHN.

    One GHN is kept per source: per resolved local path, and per Hub file, revision and ``cache_dir``. A local
    file or folder is looked at on every call (a ``stat`` of each file it was read from, nothing is read): if
    the size, modification or status-change time or inode of one changed, it is loaded again and replaces the
    kept GHN, which is then no longer held here, nor are its copies on other devices. Limit: a rewrite in
    place to the same size within the file system's timestamp granularity (a few milliseconds) is not seen
    (files written by ghn-init, e.g. by training export, are replaced by a rename, which always is), nor by
    a first ``sha256=`` check of a kept GHN, which hashes the file as it is then; hashing the contents on
    every call instead would cost about 1.3 s per GB read.

    Args:
        source: one of
            - ``None``: the default published GHN, ``"ghn3-xl-m16"`` (about 2.5 GB to download once);
            - a registry name (``ghn_init.list_ghns()`` / ``ghn-init list``), e.g. ``"ghn3-t-m8"`` (27 MB);
            - ``"hf://owner/repo/path/in/repo[@revision]"``: a pickled published checkpoint or a
              ``model.safetensors`` written by ``ghn-init convert`` (``hf://owner/repo`` alone means its
              ``model.safetensors``);
            - a local checkpoint file, or a folder written by ``ghn-init convert``;
            - ``"bundled"``: the small GHN shipped inside the package (no download);
            - a :class:`GHN`, returned as is (or its copy on ``device``).
        revision: branch, tag or commit hash of a Hub source; overrides the registry's default.
        device: where the returned GHN's weights are (default: the CPU for files, where a given GHN is).
            On another device than the loaded GHN's, a shared copy on that device is returned.
        local_files_only: Hub sources only: never download, use the ``huggingface_hub`` cache only
            (passed to ``hf_hub_download``, like ``HF_HUB_OFFLINE=1`` for this call).
        cache_dir: Hub sources only: the ``huggingface_hub`` cache folder to use instead of the default.
        token: Hub sources only: a Hugging Face token for private or gated repos (``True``: the saved login;
            default: ``HF_TOKEN`` or the saved login).
        sha256: integrity check: the expected sha256 of the checkpoint file (of ``model.safetensors`` for a
            folder or ``hf://`` repo), checked before the file is read. Downloads of published GHNs are always
            checked against the hash the Hub publishes; use this for local copies and your own uploads. For a
            GHN already loaded, the digest of the file it was read from is compared (hashed once, from disk,
            without any request to the Hub); on a difference the source is read (downloaded) and checked again.

    Returns:
        The :class:`GHN`, in eval mode.

    Raises:
        UnknownGHNError: ``source`` is not a registry name, an existing path, an ``hf://`` URL or ``"bundled"``.
        HubDownloadError: the file could not be downloaded (offline and not cached, missing, gated...).
        CheckpointError: the file is not a usable GHN (corrupted, too large, not a regular file, or a
            ``sha256`` mismatch); :class:`ConfigError` for an invalid ``config.json``.
        UnsafeCheckpointError: a pickled file names anything but tensors and containers (nothing was run).
        CheckpointNotFoundError: a registry GHN that cannot be downloaded (with where to get it), or a folder
            without ``model.safetensors`` (also a ``FileNotFoundError``).
        InvalidArgumentError: a bad argument, named by ``.argument`` (checked before anything is read): an
            empty or mistyped ``source``, a malformed ``hf://`` URL, ``revision`` given for a non-Hub source or a
            GHN instance, a malformed ``sha256``, a ``device`` this machine does not have, a mistyped
            ``cache_dir``, ``token`` or ``local_files_only``.

    Example:
        >>> import ghn_init
        >>> ghn = ghn_init.load_ghn("bundled")
        >>> ghn is ghn_init.load_ghn("bundled"), ghn.config.kind
        (True, 'ghn3')
        >>> ghn_init.load_ghn("bundled", device="meta").embed.weight.is_meta  # a copy: ghn stays on the CPU
        True
    """
    check_ghn_source(source, GHN, "source")
    check_revision(revision)
    check_flag("local_files_only", local_files_only)
    check_hub_options(cache_dir, token)
    if device is not None:
        parse_device(device)  # a device this machine lacks fails before a (large) file is read
    if isinstance(source, GHN):
        for name, value, what in (("sha256", sha256, "checks a file"), ("revision", revision, "picks a Hub file")):
            if value is not None:
                raise InvalidArgumentError(
                    f"{name}= {what}; it does not apply to a GHN instance: drop it, or pass the GHN's source instead",
                    argument=name,
                    value=value,
                )
        check_dtypes(source.state_dict(), fix="cast it first, e.g. ghn.float()")  # e.g. ghn.to(torch.float8_e4m3fn)
        return _on_device(source, device)
    expected = None if sha256 is None else parse_sha256(sha256)
    hub = _HubOptions(local_files_only, cache_dir, token)
    resolved = _resolve(DEFAULT_GHN if source is None else source, revision, hub)
    with _lock_for(resolved.key):  # other GHNs load meanwhile
        entry = _CACHE.get(resolved.key)
        if entry is not None and not _reusable(entry, resolved, expected):
            _drop(resolved.key)
            entry = None
        if entry is None:
            path = resolved.locate()
            stamp = _stamp(path)  # before reading: a change while it is read is seen by the next call
            if expected is not None:
                check_sha256(path, expected)
            entry = _Entry(resolved.load(path), path, stamp, expected)
            _CACHE[resolved.key] = entry
    return _on_device(entry.ghn, device)


def _reusable(entry: _Entry, resolved: _Resolved, sha256: Optional[str]) -> bool:
    """Whether a cached GHN may be returned: it still has its weights, (local sources) its files are unchanged
    and (``sha256``) the weights file it was read from has that digest. Never a request to the Hub."""
    if _without_storage(entry.ghn):
        logger.warning(
            "the shared GHN loaded from %s was moved to the meta device in place; loading it again "
            "(pass device= to load_ghn, or copy.deepcopy the GHN, instead of moving the shared one)",
            resolved.key[0],
        )
        return False
    if resolved.local and _stamp(entry.path) != entry.stamp:
        logger.info("%s changed on disk since it was loaded; loading it again", entry.path)
        return False
    if sha256 is not None and _digest(entry) != sha256:
        logger.info("the GHN kept for %s was not read from a file with sha256 %s; reading it again", entry.path, sha256)
        return False
    return True


def _digest(entry: _Entry) -> Optional[str]:
    """The sha256 of the weights file ``entry`` was read from: known, or hashed now from the cached file (no
    request) if its stamp is unchanged; None when that file changed or is gone (then it must be read again)."""
    if entry.sha256 is None and _stamp(entry.path) == entry.stamp:
        digest = file_sha256(weights_file(entry.path)).hexdigest()
        if _stamp(entry.path) == entry.stamp:  # not rewritten while it was hashed
            entry.sha256 = digest
    return entry.sha256


def _drop(key: tuple[str, ...]) -> None:
    """Forget a cached GHN and its copies on other devices (callers holding it keep a working GHN)."""
    entry = _CACHE.pop(key, None)
    if entry is not None:
        discard_copies(entry.ghn)


def _stamp(path: Path) -> tuple:
    """Size, modification and status-change times, inode and device of every file a GHN is read from.

    A stat per file, nothing read. Any write changes the status-change time (``os.utime`` cannot set it
    back), and an atomic replacement (a rename, as :func:`~ghn_init.hub.checkpoints.save_folder` does)
    changes the inode; only an in-place rewrite to the same size within the file system's timestamp
    granularity (a few milliseconds) goes unseen.
    """
    stamps: list[Optional[tuple[int, ...]]] = []
    for file in source_files(path):
        try:
            s = file.stat()
        except FileNotFoundError:
            stamps.append(None)  # e.g. no config.json: one appearing later changes the stamp
        else:
            stamps.append((s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_ino, s.st_dev))
    return tuple(stamps)


def _on_device(ghn: GHN, device: Union[str, torch.device, None]) -> GHN:
    if device is None:
        return ghn
    device = parse_device(device)
    own = next(iter(ghn.state_dict().values())).device
    if own.type == device.type and (device.index is None or own.index == device.index):
        return ghn
    return inference_copy(ghn, device)


def _without_storage(ghn: GHN) -> bool:
    return any(t.is_meta for t in ghn.state_dict().values())


def _resolve(source: Union[str, Path], revision: Optional[str], hub: _HubOptions) -> _Resolved:
    text = str(source)
    if text == BUNDLED:
        _no_revision(text, revision)
        return _Resolved((str(BUNDLED_DIR),), _bundled_dir, _load_bundled, local=True)
    cache = str(Path(hub.cache_dir).expanduser().resolve()) if hub.cache_dir is not None else ""
    if text.startswith(HF_SCHEME):
        file = parse_hf_url(text)
        if revision is not None:
            if "@" in text and file.revision != revision:
                raise InvalidArgumentError(
                    f"{text!r} names revision {file.revision!r} but revision={revision!r} was also given; give it once",
                    argument="revision",
                    value=revision,
                )
            file = HubFile(file.repo_id, file.filename, revision)
        return _Resolved(
            (_hub_key(file), file.revision, cache),
            lambda: _download(file, None, hub),
            lambda p: _load_from_hub(p, file),
        )
    if isinstance(source, str) and source in REGISTRY:
        entry = REGISTRY[source]
        if not entry.on_hub:
            raise CheckpointNotFoundError(entry.local_only_hint())
        file = HubFile(entry.repo_id, entry.filename, revision or entry.revision)  # type: ignore[arg-type]
        return _Resolved(
            (_hub_key(file), file.revision, cache),
            lambda: _download(file, entry, hub),
            lambda p: _load_from_hub(p, file, entry),
        )
    path = Path(source).expanduser()
    if path.exists():
        _no_revision(text, revision)
        path = path.resolve()
        return _Resolved((str(path),), lambda: path, lambda p: _named(load_file(p), str(path)), local=True)
    raise UnknownGHNError(_unknown_source_message(text), source=text)


def _named(ghn: GHN, source: str) -> GHN:
    """``ghn``, its config naming where it was loaded from (what reports show) unless it names itself."""
    ghn.config.extra.setdefault("source", source)
    return ghn


def _bundled_dir() -> Path:
    if not BUNDLED_DIR.exists():
        raise CheckpointNotFoundError(
            f"this installation of ghn-init has no bundled GHN ({BUNDLED_DIR} is missing). Use a published GHN "
            f"instead, e.g. ghn='ghn3-t-m8' (27 MB download) or the default ghn=None ({DEFAULT_GHN})."
        )
    return BUNDLED_DIR


def _load_bundled(path: Path) -> GHN:
    ghn = load_file(path)
    ghn.config.extra.setdefault("name", BUNDLED)
    return ghn


def _download(file: HubFile, entry: Optional[RegistryEntry], hub: _HubOptions) -> Path:
    options = dict(local_files_only=hub.local_files_only, cache_dir=hub.cache_dir, token=hub.token)
    path = download_hub_file(file, size_hint=entry.download_size if entry else None, **options)  # type: ignore[arg-type]
    if path.suffix == ".safetensors":
        _fetch_config_next_to(file, path, hub)
    return path


def _load_from_hub(path: Path, file: HubFile, entry: Optional[RegistryEntry] = None) -> GHN:
    try:
        ghn = load_file(path)
    except ConfigError:  # the weights are fine; the config.json beside them is not: keep the weights, name the field
        raise
    except ValueError as e:  # other CheckpointErrors; an UnsafeCheckpointError propagates unchanged
        discard_cached(path)
        raise CheckpointError(
            f"{file.describe()} was downloaded but cannot be loaded as a GHN: {e}. The cached copy was removed, "
            "so the next call downloads it again; if that fails the same way, the file is not a GHN checkpoint.",
            path=path,
        ) from e
    if ghn.config.extra.get("source") in (None, str(path)):
        ghn.config.extra["source"] = str(file)
    if entry is not None:
        ghn.config.extra["name"] = entry.name
    return ghn


def _fetch_config_next_to(file: HubFile, weights: Path, hub: _HubOptions) -> None:
    """Download the ``config.json`` written by ``ghn-init convert`` into the same cached snapshot as the weights."""
    from huggingface_hub import try_to_load_from_cache

    snapshot_commit = weights.parents[len(Path(file.filename).parts) - 1].name
    config = file.sibling(CONFIG_NAME, revision=snapshot_commit)
    found = try_to_load_from_cache(config.repo_id, config.filename, revision=config.revision, cache_dir=hub.cache_dir)
    if found is not None:
        return  # cached, or cached as absent
    try:
        download_hub_file(config, local_files_only=hub.local_files_only, cache_dir=hub.cache_dir, token=hub.token)
    except HubFileNotFoundError:
        pass  # a bare safetensors file: the config is inferred from its tensor shapes


def _hub_key(file: HubFile) -> str:
    return f"{HF_SCHEME}{file.repo_id}/{file.filename}"


def _no_revision(source: str, revision: Optional[str]) -> None:
    if revision is not None:
        raise InvalidArgumentError(
            f"revision={revision!r} applies to Hub sources only (hf://..., registry names), not to {source!r}; drop it",
            argument="revision",
            value=revision,
        )


def _unknown_source_message(source: str) -> str:
    close = difflib.get_close_matches(source, list(REGISTRY), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return (
        f"unknown GHN source {source!r}: not a registry name, an existing file or folder, an hf:// URL or "
        f"'bundled'.{hint} Registry names: {', '.join(REGISTRY)}."
    )
