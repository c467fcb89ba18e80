"""Every error ghn-init raises on purpose, in one place.

All of them derive from :class:`GHNInitError`, so ``except ghn_init.GHNInitError`` catches anything the
library reports, and each also keeps the standard-library type a caller would expect
(``OSError`` for downloads, ``ValueError`` for bad files and arguments, ...), so existing
``except OSError`` code keeps working. Errors carry the data they talk about as attributes
(``StrictError.missing``, ``HubDownloadError.file``, ``CheckpointError.path``), and their message is one
line that says what to do.

Example:
    >>> import ghn_init, torch.nn as nn
    >>> try:
    ...     ghn_init.apply(nn.Sequential(nn.Conv2d(3, 8, 3), nn.GroupNorm(2, 8)), "bundled", strict=True,
    ...                    postprocess="none")
    ... except ghn_init.StrictError as e:
    ...     print(e.missing)
    ['1.bias', '1.weight']
"""

from __future__ import annotations

import pickle
from typing import Any, Optional, Sequence


def listed(names: Sequence[str], limit: int) -> str:
    """The first ``limit`` of ``names``, comma-separated, then how many more: for one-line messages.

    Example:
        >>> listed(["a", "b", "c", "d"], 2)
        'a, b, ... (+2)'
    """
    return ", ".join(names[:limit]) + (f", ... (+{len(names) - limit})" if len(names) > limit else "")


__all__ = [
    "GHNInitError",
    "TraceError",
    "StrictError",
    "PredictionError",
    "WriteError",
    "CheckpointError",
    "CheckpointNotFoundError",
    "UnsupportedDtypeError",
    "ConfigError",
    "UnsafeCheckpointError",
    "UnknownGHNError",
    "UnknownModelError",
    "HubDownloadError",
    "HubFileNotFoundError",
    "CorruptDownloadError",
    "HubUploadError",
    "InvalidArgumentError",
    "InvalidArgumentTypeError",
    "UnsupportedModelError",
    "PeerProcessError",
]


class GHNInitError(Exception):
    """Base class of every error ghn-init raises on purpose.

    Example:
        >>> import ghn_init
        >>> try:
        ...     ghn_init.load_ghn("no-such-ghn")
        ... except ghn_init.GHNInitError as e:
        ...     print(type(e).__name__, e.source)
        UnknownGHNError no-such-ghn
    """


class TraceError(GHNInitError, RuntimeError):
    """The model could not be recorded into a GHN graph.

    Attributes:
        model: the model's class name.
        attempts: one line per recording attempt that failed (``"meta forward: ..."``).
    """

    def __init__(self, message: str, *, model: str = "", attempts: Sequence[str] = ()):
        super().__init__(message)
        self.model = model
        self.attempts = list(attempts)


class StrictError(GHNInitError, RuntimeError):
    """``apply(..., strict=True)`` found trainable tensors the GHN does not predict; nothing was written.

    Attributes:
        model: the model's class name.
        missing: the names of the trainable tensors that would keep their default initialization.
    """

    def __init__(self, message: str, *, model: str = "", missing: Sequence[str] = ()):
        super().__init__(message)
        self.model = model
        self.missing = list(missing)


class PredictionError(GHNInitError, FloatingPointError):
    """The GHN predicted values that cannot be written (not finite, or not finite in the model's dtype).

    Nothing was written. A float16 model whose predicted values overflow float16 gets this error, with
    ``names`` listing the tensors: initialize the model in float32 and cast it afterwards.

    Attributes:
        names: the tensors concerned (empty when the GHN's own output is not finite).

    Example:
        >>> import ghn_init, torchvision
        >>> model = torchvision.models.resnet18().half()
        >>> try:
        ...     ghn_init.apply(model, "ghn3-xl-m16")  # doctest: +SKIP
        ... except ghn_init.PredictionError as e:
        ...     print(e.names[:2])
    """

    def __init__(self, message: str, *, names: Sequence[str] = ()):
        super().__init__(message)
        self.names = list(names)


class WriteError(GHNInitError, RuntimeError):
    """A predicted tensor could not be written into the model; the model was left as it was.

    Every tensor swapped before the failure got its old data back (the message says so if one could not).
    The one exception is a device fault while ``apply`` tiles large predictions into the model's own
    tensors (its last step, after every check): the message then names the tensors already overwritten.

    Attributes:
        name: the tensor that failed.
    """

    def __init__(self, message: str, *, name: str = ""):
        super().__init__(message)
        self.name = name


class CheckpointError(GHNInitError, ValueError):
    """A GHN checkpoint file or folder is not usable (corrupted, truncated, wrong layout).

    Attributes:
        path: the file or folder, when known.
    """

    def __init__(self, message: str, *, path: Optional[Any] = None):
        super().__init__(message)
        self.path = path


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """A local GHN source has no checkpoint where one is expected: nothing at the path, or a folder without
    ``model.safetensors`` (e.g. ``load_ghn(".")``). Also a ``FileNotFoundError``, as it was before it was typed.

    Attributes:
        path: the file or folder looked at.

    Example:
        >>> import ghn_init
        >>> try:
        ...     ghn_init.load_ghn("docs")
        ... except ghn_init.CheckpointNotFoundError as e:
        ...     print(e.path.name)
        docs
    """

    def __str__(self) -> str:  # OSError would otherwise print "[Errno ...]" forms for some argument shapes
        return str(self.args[0]) if self.args else ""


class UnsupportedDtypeError(CheckpointError):
    """A GHN's weights are of a dtype a GHN cannot run in (float8, integers, complex, bool), refused when it is
    loaded (they loaded before and ``apply`` failed with ``NotImplementedError``).

    Attributes:
        path: the file, when known (None for a GHN instance).
        dtypes: ``{tensor name: dtype}`` of the offending tensors, e.g. ``{"embed.weight": "float8_e4m3fn"}``.
    """

    def __init__(self, message: str, *, path: Optional[Any] = None, dtypes: Optional[dict] = None):
        super().__init__(message, path=path)
        self.dtypes = dict(dtypes or {})


class ConfigError(CheckpointError):
    """A GHN ``config.json`` (or config dict) has a missing, unknown or mistyped field, or a newer format.

    The message names the file. Attributes:
        field: the offending key (``"layernorm"``, ``"format_version"``, ...), when there is one.

    Example:
        >>> import ghn_init
        >>> try:
        ...     ghn_init.GHNConfig.from_dict({**ghn_init.GHNConfig().to_dict(), "layernorm": "false"})
        ... except ghn_init.ConfigError as e:
        ...     print(e.field)
        layernorm
    """

    def __init__(self, message: str, *, path: Optional[Any] = None, field: Optional[str] = None):
        super().__init__(message, path=path)
        self.field = field


class UnsafeCheckpointError(GHNInitError, pickle.UnpicklingError):
    """A pickled checkpoint asks to build an object that is not a tensor or a plain container.

    Nothing from the file was executed. Attributes:
        path: the file, when known.
    """

    def __init__(self, message: str, *, path: Optional[Any] = None):
        super().__init__(message)
        self.path = path


class UnknownGHNError(GHNInitError, FileNotFoundError):
    """A GHN source is neither a registry name, a local path, an ``hf://`` URL nor ``"bundled"``.

    Attributes:
        source: what was asked for.
    """

    def __init__(self, message: str, *, source: str = ""):
        super().__init__(message)
        self.source = source


class HubDownloadError(GHNInitError, OSError):
    """A file could not be fetched from the Hugging Face Hub (offline, refused, gated, ...).

    Attributes:
        file: the :class:`ghn_init.hub.download.HubFile` concerned, when known.
    """

    def __init__(self, message: str, *, file: Optional[Any] = None):
        super().__init__(message)
        self.file = file

    def __str__(self) -> str:  # OSError would otherwise print "[Errno ...]" forms for some argument shapes
        return str(self.args[0]) if self.args else ""


class HubFileNotFoundError(HubDownloadError, FileNotFoundError):
    """The Hub answered that the repository has no such file (at that revision)."""


class CorruptDownloadError(HubDownloadError):
    """A downloaded file does not match the checksum the Hub publishes; it was removed from the cache."""


class HubUploadError(GHNInitError, OSError):
    """A GHN folder could not be published on the Hugging Face Hub (:func:`ghn_init.push_to_hub`): no token,
    ``HF_HUB_OFFLINE`` set, the Hub refused (401/403, a missing revision, a rejected card) or could not be reached.

    The message says what to do (``hf auth login``, ``HF_TOKEN`` or ``token=``, ...) and never contains the token.
    No partial commit is made; the repo may have been created before a later step failed.

    Attributes:
        repo_id: the Hub repo pushed to.
        status: the HTTP status the Hub answered, or None (no request made, or no answer).

    Example:
        >>> import ghn_init
        >>> try:
        ...     ghn_init.push_to_hub("runs/ghn/ghn", "me/my-ghn", token="hf_...")  # doctest: +SKIP
        ... except ghn_init.HubUploadError as e:
        ...     print(e.status)
        401
    """

    def __init__(self, message: str, *, repo_id: str = "", status: Optional[int] = None):
        super().__init__(message)
        self.repo_id = repo_id
        self.status = status

    def __str__(self) -> str:  # OSError would otherwise print "[Errno ...]" forms for some argument shapes
        return str(self.args[0]) if self.args else ""


class UnknownModelError(GHNInitError, ValueError):
    """A model name given to :func:`ghn_init.models.create_model` (or the CLI) is not a torchvision or timm model.

    Attributes:
        name: the name asked for.
    """

    def __init__(self, message: str, *, name: str = ""):
        super().__init__(message)
        self.name = name


class InvalidArgumentError(GHNInitError, ValueError):
    """An argument of a public entry point (``apply``, ``predict``, ``trace``, ``load_ghn``, ``compare``, ``train``)
    has the wrong type or value; nothing was done.

    The message is one line that names the argument, what was given and what to pass instead.

    Attributes:
        argument: the argument's name (``"input_size"``, ``"generator"``, ``"--lr"``, ...).
        value: what was given.

    Example:
        >>> import ghn_init, torchvision
        >>> try:
        ...     ghn_init.trace(torchvision.models.resnet18(), input_size=(3, -1, 5))
        ... except ghn_init.InvalidArgumentError as e:
        ...     print(e.argument)
        input_size
    """

    def __init__(self, message: str, *, argument: str = "", value: Any = None):
        super().__init__(message)
        self.argument = argument
        self.value = value


class UnsupportedModelError(GHNInitError, ValueError):
    """An init scheme does not apply to this model (e.g. ``mimetic`` on a model without attention); nothing was
    changed.

    Attributes:
        scheme: the scheme's name.
        model: the model's class name.

    Example:
        >>> import ghn_init, torch.nn as nn
        >>> try:
        ...     ghn_init.get_scheme("mimetic")(nn.Sequential(nn.Linear(4, 4)))
        ... except ghn_init.UnsupportedModelError as e:
        ...     print(e.scheme, e.model)
        mimetic Sequential
    """

    def __init__(self, message: str, *, scheme: str = "", model: str = ""):
        super().__init__(message)
        self.scheme = scheme
        self.model = model


class InvalidArgumentTypeError(InvalidArgumentError, TypeError):
    """An :class:`InvalidArgumentError` for a value of the wrong type; also a ``TypeError``, so code that caught
    the ``TypeError`` torch or Python raised before keeps working."""


class PeerProcessError(GHNInitError, RuntimeError):
    """Another process of a distributed (``torchrun``) training run stopped or lost its connection, so this one
    cannot go on; nothing is wrong with this process's input.

    The message is one line: which step this process had reached, the backend's own words, where the run's last
    checkpoint is, and that running the same command again resumes from it.

    Attributes:
        rank: this process's rank.
        world_size: the number of processes in the run.
        step: the last step this process finished.

    Example:
        >>> e = PeerProcessError("another process stopped", rank=0, world_size=2, step=40)
        >>> (e.rank, e.world_size, e.step)
        (0, 2, 40)
    """

    def __init__(self, message: str, *, rank: int = 0, world_size: int = 1, step: int = 0):
        super().__init__(message)
        self.rank = rank
        self.world_size = world_size
        self.step = step
