"""Publish a GHN folder (written by ``ghn-init train`` or ``ghn-init convert``) on the Hugging Face Hub.

:func:`push_to_hub` checks everything it can on this machine first (the arguments, that the folder loads as a GHN,
that it has a model card, that a token is available), so a broken folder is never published and a typo costs no
request. Then it goes through ``huggingface_hub`` (``HfApi.create_repo``, ``create_branch``, ``create_commit``), so
``HF_ENDPOINT``, ``HF_TOKEN``, ``hf auth login`` and large-file uploads work as for any Hub upload; its failures
become one :class:`~ghn_init.errors.HubUploadError` that says what to do, and never contains the token.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

from ..constants import CARD_NAME, CONFIG_NAME, HF_SCHEME, WEIGHTS_NAME
from ..errors import CheckpointError, CheckpointNotFoundError, HubUploadError, InvalidArgumentError
from ..validation import check_flag, check_revision
from .checkpoints import load_file
from .download import _REPO_PART
from .safe_pickle import check_regular_file

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo

__all__ = ["push_to_hub", "PUSHED_FILES"]

#: The files of a GHN folder that are published; anything else in the folder (a training checkpoint, logs) is not.
PUSHED_FILES = (WEIGHTS_NAME, CONFIG_NAME, CARD_NAME)

DEFAULT_COMMIT_MESSAGE = "Upload GHN with ghn-init"
MAX_CARD_BYTES = 1 << 24  # a model card is a few KB
_NETWORK_MODULES = frozenset({"httpx", "httpx2", "requests", "urllib3", "aiohttp"})


def push_to_hub(
    folder: Union[str, os.PathLike],
    repo_id: str,
    *,
    revision: Optional[str] = None,
    private: Optional[bool] = None,
    token: Optional[str] = None,
    commit_message: Optional[str] = None,
    create_pr: bool = False,
) -> CommitInfo:
    """Upload a GHN folder's ``model.safetensors``, ``config.json`` and ``README.md`` to a Hub model repo.

    Before any request the folder is loaded as a GHN (exactly as ``load_ghn(folder)`` would), so a corrupted or
    incomplete folder is refused, and it must have a ``README.md`` model card. The repo is created if it does not
    exist (``private`` applies only then), the branch ``revision`` too, and the three files go up in one commit;
    other files in the folder (a training checkpoint, logs) are not uploaded. In a card written by
    ``ghn-init convert`` without ``--repo-id``, the placeholder ``hf://OWNER/REPO`` is replaced by
    ``hf://{repo_id}`` in the uploaded copy (the local file is not changed). Afterwards anyone can run
    ``ghn_init.load_ghn("hf://{repo_id}")``.

    Args:
        folder: a GHN folder, e.g. ``OUT/ghn`` written by ``ghn-init train OUT`` or ``DST_DIR`` of
            ``ghn-init convert SRC DST_DIR``.
        repo_id: the Hub model repo, ``"owner/name"`` (your user name or an organization you can write to).
        revision: the branch to commit to, created from the default branch if missing (default: ``main``).
        private: create the repo as private (``True``) or public (``False``); ignored when the repo exists
            (default: the Hub's default for the owner, public unless the organization says otherwise).
        token: a Hugging Face token with write access (default: ``HF_TOKEN`` or the login saved by
            ``hf auth login``).
        commit_message: the commit's summary (default: ``"Upload GHN with ghn-init"``).
        create_pr: open a pull request with the commit instead of committing to the branch (default: False).

    Returns:
        ``huggingface_hub.CommitInfo``: ``.commit_url``, ``.oid`` (the commit hash), ``.pr_url`` (with
        ``create_pr``); it is also a ``str``, the commit URL.

    Raises:
        InvalidArgumentError: a bad argument (``.argument`` names it): ``repo_id`` not ``owner/name``, an empty
            ``revision`` or ``commit_message``, a non-bool ``private`` or ``create_pr``, a mistyped ``token``.
        CheckpointNotFoundError: ``folder`` does not exist, or lacks ``model.safetensors``, ``config.json`` or
            ``README.md`` (the message says how to write each).
        CheckpointError: ``folder`` is not a folder, or does not load as a GHN (corrupted or truncated weights;
            :class:`~ghn_init.errors.ConfigError` for an invalid ``config.json``).
        HubUploadError: no token, ``HF_HUB_OFFLINE`` set, the Hub refused (401/403: the token cannot write to the
            owner; a missing revision; a card whose metadata the Hub rejects) or could not be reached. The repo may
            have been created before a later step failed; no partial commit is ever made.

    Example:
        >>> import ghn_init
        >>> info = ghn_init.push_to_hub("runs/ghn/ghn", "me/my-ghn")  # doctest: +SKIP
        >>> info.commit_url  # doctest: +SKIP
        'https://huggingface.co/me/my-ghn/commit/...'
        >>> ghn = ghn_init.load_ghn("hf://me/my-ghn")  # doctest: +SKIP
    """
    from .convert import REPO_PLACEHOLDER

    _check_arguments(folder, repo_id, revision, private, token, commit_message, create_pr)
    folder = Path(folder).expanduser()
    card = check_folder(folder)
    token = _resolve_token(token, repo_id)
    card = card.replace(f"{HF_SCHEME}{REPO_PLACEHOLDER}", f"{HF_SCHEME}{repo_id}")
    return _upload(
        folder,
        card.encode("utf-8"),
        repo_id,
        revision=revision,
        private=private,
        token=token,
        commit_message=commit_message or DEFAULT_COMMIT_MESSAGE,
        create_pr=create_pr,
    )


def check_repo_id(repo_id: Any) -> None:
    """``repo_id`` is ``"owner/name"``, each part a valid Hub name (letters, digits, ``-``, ``_``, ``.``).

    Raises:
        InvalidArgumentError: one line naming ``repo_id`` and the expected form.

    Example:
        >>> check_repo_id("me/my-ghn")
        >>> try:
        ...     check_repo_id("my-ghn")
        ... except InvalidArgumentError as e:
        ...     print(e.argument)
        repo_id
    """
    parts = repo_id.split("/") if isinstance(repo_id, str) else []
    valid = len(parts) == 2 and all(
        _REPO_PART.match(p) and ".." not in p and not p.endswith((".", "-")) for p in parts
    )
    if not valid:
        shown = repr(repo_id) if isinstance(repo_id, str) else type(repo_id).__name__
        raise InvalidArgumentError(
            f"repo_id must be 'owner/name' (your Hub user or organization, then the repo's name: letters, digits, "
            f"'-', '_', '.'), e.g. 'me/my-ghn'; got {shown}",
            argument="repo_id",
            value=repo_id,
        )


def check_folder(folder: Path) -> str:
    """Check that ``folder`` is a publishable GHN folder and return its model card's text.

    The folder must hold ``model.safetensors`` and ``config.json`` that load as a GHN (they are loaded, so
    corrupted weights are refused) and a ``README.md`` card.

    Raises:
        CheckpointNotFoundError: the folder or one of the three files is missing.
        CheckpointError: not a folder, or the files do not load as a GHN.

    Example:
        >>> from ghn_init.hub import BUNDLED_DIR
        >>> check_folder(BUNDLED_DIR).startswith("# GHN3")
        True
    """
    if not folder.exists():
        raise CheckpointNotFoundError(
            f"{folder} does not exist; pass the folder `ghn-init train OUT` writes (OUT/ghn) or `ghn-init convert "
            "SRC DST_DIR` writes (DST_DIR)",
            path=folder,
        )
    if not folder.is_dir():
        raise CheckpointError(
            f"{folder} is not a folder; pass the GHN folder holding {', '.join(PUSHED_FILES)} "
            "(`ghn-init convert SRC DST_DIR` makes one from a checkpoint file)",
            path=folder,
        )
    for name in (WEIGHTS_NAME, CONFIG_NAME):
        if not (folder / name).exists():
            inner = folder / "ghn"
            hint = (
                f"; {inner} has one: pass that folder (`ghn-init train OUT` exports the GHN to OUT/ghn)"
                if (inner / name).is_file()
                else "; pass a folder written by `ghn-init train` (OUT/ghn) or `ghn-init convert`"
            )
            raise CheckpointNotFoundError(f"{folder} has no {name}{hint}", path=folder / name)
    try:
        load_file(folder)
    except CheckpointError as e:
        raise type(e)(f"{folder} cannot be published: it does not load as a GHN: {_first_line(e)}", **_data(e)) from e
    card = folder / CARD_NAME
    if not card.exists():
        raise CheckpointNotFoundError(
            f"{folder} has no {CARD_NAME} model card; `ghn-init train` and `ghn-init convert` write one, or write "
            "your own: ghn_init.hub.card.make_card('# My GHN\\n...', license='mit').save('"
            f"{card}')",
            path=card,
        )
    check_regular_file(card, MAX_CARD_BYTES, what=f"{CARD_NAME} model card")
    try:
        return card.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        message = f"{card} is not UTF-8 text ({e}); write the model card as UTF-8 Markdown"
        raise CheckpointError(message, path=card) from None


def _check_arguments(
    folder: Any,
    repo_id: Any,
    revision: Any,
    private: Any,
    token: Any,
    commit_message: Any,
    create_pr: Any,
) -> None:
    from ..errors import InvalidArgumentTypeError

    if not isinstance(folder, (str, os.PathLike)) or not os.fspath(folder).strip():
        raise InvalidArgumentTypeError(
            f"folder must be the path of a GHN folder (e.g. 'runs/ghn/ghn'), got {folder!r}",
            argument="folder",
            value=folder,
        )
    check_repo_id(repo_id)
    check_revision(revision)
    if private is not None:
        check_flag("private", private)
    check_flag("create_pr", create_pr)
    if token is not None and token is not True and not (isinstance(token, str) and token.strip()):
        raise InvalidArgumentTypeError(
            "token must be a Hugging Face token string (with write access), or None for HF_TOKEN or the saved "
            f"login, got {type(token).__name__ if not isinstance(token, str) else 'an empty string'}",
            argument="token",
            value="<hidden>" if isinstance(token, str) else token,
        )
    if commit_message is not None and not (isinstance(commit_message, str) and commit_message.strip()):
        raise InvalidArgumentError(
            f"commit_message must be a non-empty string (or None for the default), got {commit_message!r}",
            argument="commit_message",
            value=commit_message,
        )


def _resolve_token(token: Any, repo_id: str) -> str:
    """The token to push with (given, ``HF_TOKEN`` or the saved login); refused before any request if there is none
    or ``HF_HUB_OFFLINE`` is set."""
    from huggingface_hub import constants, get_token

    if constants.is_offline_mode() if hasattr(constants, "is_offline_mode") else constants.HF_HUB_OFFLINE:
        raise HubUploadError(
            f"cannot push to {repo_id!r}: HF_HUB_OFFLINE is set, so nothing may be sent to the Hub; unset it and run "
            "again",
            repo_id=repo_id,
        )
    if isinstance(token, str):
        return token
    found = get_token()
    if not found:
        raise HubUploadError(
            f"cannot push to {repo_id!r}: no Hugging Face token found; log in with `hf auth login` (a token with "
            "write access), set HF_TOKEN, or pass token=",
            repo_id=repo_id,
        )
    return found


def _upload(
    folder: Path,
    card: bytes,
    repo_id: str,
    *,
    revision: Optional[str],
    private: Optional[bool],
    token: str,
    commit_message: str,
    create_pr: bool,
) -> CommitInfo:
    from huggingface_hub import CommitOperationAdd, HfApi

    from .. import __version__

    api = HfApi(token=token, library_name="ghn-init", library_version=__version__)
    operations = [
        CommitOperationAdd(path_in_repo=WEIGHTS_NAME, path_or_fileobj=str(folder / WEIGHTS_NAME)),
        CommitOperationAdd(path_in_repo=CONFIG_NAME, path_or_fileobj=str(folder / CONFIG_NAME)),
        CommitOperationAdd(path_in_repo=CARD_NAME, path_or_fileobj=card),
    ]
    step = "creating the repo"
    try:
        options = {} if private is None else {"private": private}
        api.create_repo(repo_id, repo_type="model", exist_ok=True, **options)
        if revision not in (None, "main") and not create_pr and not revision.startswith("refs/"):
            step = f"creating the branch {revision!r} of the repo"
            api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
        step = "committing to the repo"
        return api.create_commit(
            repo_id,
            operations,
            commit_message=commit_message,
            repo_type="model",
            revision=revision,
            create_pr=create_pr,
        )
    except Exception as e:  # noqa: BLE001 - huggingface_hub's and the HTTP client's errors, whatever the version
        error = _upload_error(e, repo_id, revision, step)
        if error is None:
            raise
        # from None: the HTTP error (its request, headers) is not chained, so no traceback can show the token
        raise HubUploadError(_scrub(str(error), token), repo_id=repo_id, status=error.status) from None


def _upload_error(e: BaseException, repo_id: str, revision: Optional[str], step: str) -> Optional[HubUploadError]:
    """The :class:`HubUploadError` for a failed Hub call (None for an error that is not about the Hub: a bug)."""
    from huggingface_hub import constants
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    endpoint = constants.ENDPOINT
    response = getattr(e, "response", None)
    status = getattr(response, "status_code", None)
    owner = repo_id.split("/")[0]
    where = f"the Hub at {endpoint}"
    if isinstance(e, RevisionNotFoundError):
        message = (
            f"{where} found no branch {revision!r} while {step} {repo_id!r}; pass an existing branch (with "
            "create_pr, the branch the pull request is for), or leave the revision out to push to main"
        )
    elif status in (401, 403) or isinstance(e, RepositoryNotFoundError):
        message = (
            f"{where} answered HTTP {status} to {step} {repo_id!r}: the token is invalid or cannot write to "
            f"{owner!r}; log in with `hf auth login` using a token with write access, set HF_TOKEN, "
            "or pass token="
        )
    elif isinstance(e, HfHubHTTPError):
        detail = getattr(e, "server_message", None) or _first_line(e)
        message = f"{where} answered HTTP {status} to {step} {repo_id!r}: {detail}"
    elif isinstance(e, ValueError) and "README.md" in str(e):  # huggingface_hub's check of the card's metadata
        message = f"{where} refused the model card of {repo_id!r}: {_first_line(e, join=True)}; fix its YAML header"
    elif isinstance(e, (OSError, TimeoutError)) or _is_network_error(e):
        message = (
            f"could not reach {where} while {step} {repo_id!r} ({type(e).__name__}: {_first_line(e)}); check the "
            "network connection, proxy and HF_ENDPOINT, then run again"
        )
    else:
        return None
    return HubUploadError(message, repo_id=repo_id, status=status)


def _is_network_error(e: BaseException) -> bool:
    """An error of the HTTP client huggingface_hub uses (``httpx``/``httpx2`` or ``requests``): connection, timeout."""
    return any(cls.__module__.split(".")[0] in _NETWORK_MODULES for cls in type(e).__mro__)


def _first_line(e: BaseException, join: bool = False) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    if not lines:
        return type(e).__name__
    return "; ".join(lines) if join else lines[0]


def _data(e: CheckpointError) -> dict[str, Any]:
    """The keyword data of a :class:`CheckpointError` subclass, to raise it again with another message."""
    data = {"path": e.path}
    for name in ("field", "dtypes"):
        if hasattr(e, name):
            data[name] = getattr(e, name)
    return data


def _scrub(text: str, token: str) -> str:
    """``text`` without the token (an HTTP library could echo a header)."""
    return text.replace(token, "<token>") if token else text
