"""Fetch files from the Hugging Face Hub with errors that say what to do next.

Downloads go through ``huggingface_hub.hf_hub_download``, so its cache, ``HF_HUB_OFFLINE``,
``HF_ENDPOINT``, tokens and progress bars all apply. On top of it this module
- turns its exceptions into one :class:`HubDownloadError` whose message names the repo, file and revision
  and the ways out (a local path, ``ghn='bundled'``, logging in);
- checks a freshly downloaded large (LFS) file against the sha256 the Hub published for it, because a
  truncated or altered file would otherwise be cached and reused silently;
- removes a cached file that turned out to be unusable, so the next call downloads it again.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from ..constants import HF_SCHEME, WEIGHTS_NAME
from ..errors import CorruptDownloadError, HubDownloadError, HubFileNotFoundError, InvalidArgumentError

_SHA256 = re.compile(r"[0-9a-f]{64}")



@dataclass(frozen=True)
class HubFile:
    """A file in a Hub model repo at a revision (branch, tag or commit hash)."""

    repo_id: str
    filename: str
    revision: str = "main"

    def __str__(self) -> str:
        return f"{HF_SCHEME}{self.repo_id}/{self.filename}" + ("" if self.revision == "main" else f"@{self.revision}")

    def describe(self) -> str:
        return f"{self.filename!r} from the Hub repo {self.repo_id!r} (revision {self.revision!r})"

    def sibling(self, filename: str, revision: Optional[str] = None) -> HubFile:
        """A file in the same repo folder, e.g. the ``config.json`` next to ``model.safetensors``."""
        folder = self.filename.rpartition("/")[0]
        return HubFile(self.repo_id, f"{folder}/{filename}" if folder else filename, revision or self.revision)


def parse_hf_url(url: str) -> HubFile:
    """``hf://owner/repo/path/in/repo[@revision]`` -> :class:`HubFile`. A bare repo means its ``model.safetensors``."""
    if not url.startswith(HF_SCHEME):
        raise InvalidArgumentError(
            f"not a Hub URL: {url!r}; expected hf://owner/repo/path/in/repo[@revision]", argument="source", value=url
        )
    body, revision = url[len(HF_SCHEME) :], "main"
    if "@" in body:
        body, revision = body.rsplit("@", 1)
    parts = [p for p in body.split("/") if p]
    if len(parts) < 2 or not revision:
        raise InvalidArgumentError(
            f"cannot read {url!r}: expected hf://owner/repo/path/in/repo[@revision], "
            "e.g. hf://SamsungSAILMontreal/ghn3/ghn3tm8.pt or hf://owner/repo@v1 for a converted GHN",
            argument="source",
            value=url,
        )
    bad = [p for p in parts[:2] if not _REPO_PART.match(p) or ".." in p or p.endswith((".", "-"))]
    bad += [p for p in parts[2:] if p in (".", "..")]
    if bad:
        raise InvalidArgumentError(
            f"cannot read {url!r}: {bad[0]!r} is not a valid Hub name (letters, digits, '-', '_', '.'; no '..'); "
            "expected hf://owner/repo/path/in/repo[@revision]",
            argument="source",
            value=url,
        )
    filename = "/".join(parts[2:]) or WEIGHTS_NAME
    return HubFile(f"{parts[0]}/{parts[1]}", filename, revision)


_REPO_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")  # huggingface_hub's rule for owner and repo names


def cached_file(file: HubFile, cache_dir: Union[str, Path, None] = None) -> Optional[Path]:
    """The cached copy of ``file`` if the local cache (default, or ``cache_dir``) has one (no network)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(file.repo_id, file.filename, revision=file.revision, cache_dir=cache_dir)
    return Path(found) if isinstance(found, str) else None


def download(
    file: HubFile,
    *,
    size_hint: Optional[str] = None,
    local_files_only: bool = False,
    cache_dir: Union[str, Path, None] = None,
    token: Union[str, bool, None] = None,
) -> Path:
    """Local path of ``file``, downloading it unless cached. Raises :class:`HubDownloadError` with a way out.

    ``local_files_only``, ``cache_dir`` and ``token`` are passed to ``huggingface_hub.hf_hub_download``.
    """
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    from .. import __version__

    before = cached_file(file, cache_dir)
    try:
        path = Path(
            hf_hub_download(
                file.repo_id,
                file.filename,
                revision=file.revision,
                library_name="ghn-init",
                library_version=__version__,
                local_files_only=local_files_only,
                cache_dir=cache_dir,
                token=token,
            )
        )
    except LocalEntryNotFoundError as e:
        raise HubDownloadError(
            _not_cached_message(
                file, size_hint, offline=constants.is_offline_mode() or local_files_only, cause=e, cache_dir=cache_dir,
                local_files_only=local_files_only,
            ),
            file=file,
        ) from e
    except RemoteEntryNotFoundError as e:
        raise HubFileNotFoundError(
            f"{file.describe()} does not exist (404 Entry Not Found at {_endpoint()}). "
            "Check the file name and revision; `ghn-init list` shows the published GHNs.",
            file=file,
        ) from e
    except RevisionNotFoundError as e:
        raise HubDownloadError(
            f"revision {file.revision!r} does not exist in the Hub repo {file.repo_id!r} (at {_endpoint()}). "
            "Use a branch, tag or commit hash of that repo, or leave the revision out to use 'main'.",
            file=file,
        ) from e
    except (GatedRepoError, RepositoryNotFoundError) as e:
        raise HubDownloadError(
            f"the Hub repo {file.repo_id!r} was not found at {_endpoint()} or needs authorization to read "
            f"{file.filename!r}. If it is private or gated, log in with `hf auth login` or set HF_TOKEN; "
            "otherwise check the repo name.",
            file=file,
        ) from e
    except HfHubHTTPError as e:
        raise HubDownloadError(f"the Hub refused {file.describe()}: {e}", file=file) from e
    except OSError as e:  # huggingface_hub's size check ("Consistency check failed") and disk errors
        raise HubDownloadError(
            f"downloading {file.describe()} failed: {e}. Run the same call again to retry.", file=file
        ) from e
    if before is None or os.path.realpath(before) != os.path.realpath(path):
        verify_lfs_hash(path, file)
    return path


def file_sha256(path: Union[str, Path]) -> hashlib._Hash:
    """The sha256 of a file's bytes, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest


def verify_lfs_hash(path: Path, file: HubFile) -> None:
    """Compare a cached blob with the sha256 it is named after (the Hub's LFS hash); drop it if they differ.

    Only LFS files are named by their sha256 (small git files are named by a git sha1 and are not checked).
    """
    blob = Path(os.path.realpath(path))
    if not _SHA256.fullmatch(blob.name):
        return
    digest = file_sha256(blob)
    if digest.hexdigest() != blob.name:
        size = blob.stat().st_size
        discard_cached(path)
        raise CorruptDownloadError(
            f"the download of {file.describe()} is corrupted: the {size} bytes received have sha256 "
            f"{digest.hexdigest()}, but the Hub published {blob.name}. The bad copy was removed from the cache; "
            "run the same call again to download it again.",
            file=file,
        )


def discard_cached(path: Path) -> None:
    """Remove a cached file (the snapshot entry and the blob it points to) so the next call downloads it again."""
    blob = Path(os.path.realpath(path))
    for p in {Path(path), blob}:
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def _not_cached_message(
    file: HubFile,
    size_hint: Optional[str],
    *,
    offline: bool,
    cause: BaseException,
    cache_dir: Union[str, Path, None] = None,
    local_files_only: bool = False,
) -> str:
    from huggingface_hub import constants

    size = f" ({size_hint})" if size_hint else ""
    if local_files_only:
        why = "local_files_only=True, so nothing may be downloaded"
        retry = f"call once without local_files_only and with network access to download it{size}"
    elif offline:
        why = "HF_HUB_OFFLINE is set, so nothing may be downloaded"
        retry = f"unset HF_HUB_OFFLINE and run once with network access to download it{size}"
    else:
        reason = cause.__cause__ or cause
        why = f"the Hub at {constants.ENDPOINT} could not be reached ({type(reason).__name__}: {reason})"
        retry = f"check the network connection, proxy and HF_ENDPOINT, then run again to download it{size}"
    return (
        f"{file.describe()} is not in the local cache ({cache_dir or constants.HF_HUB_CACHE}) and {why}. "
        f"To fix: {retry}; "
        f"or pass the path of a local copy (ghn_init.load_ghn('/path/to/{Path(file.filename).name}'), "
        f"`--ghn /path/to/{Path(file.filename).name}`); or use the GHN shipped with ghn-init: ghn='bundled'."
    )
