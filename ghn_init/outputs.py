"""Checks of the output folders ``train`` and ``compare`` write, made before any work.

A folder that cannot be written (the path is a file, a parent is a file, nothing on the way is writable)
used to fail with a raw ``[Errno 17] File exists`` or ``[Errno 20] Not a directory`` only after the data was
loaded and the runs were trained; :func:`check_output_folder` says so up front, in one line that names the
argument.

Example:
    >>> import tempfile, os
    >>> from ghn_init.errors import InvalidArgumentError
    >>> path = os.path.join(tempfile.mkdtemp(), "a_file")
    >>> open(path, "w").close()
    >>> try:
    ...     check_output_folder(path, "out")
    ... except InvalidArgumentError as e:
    ...     print(e.argument)
    out
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterable, Union

from .errors import InvalidArgumentError

__all__ = ["check_output_folder", "clear_outputs", "deepest_existing"]


def deepest_existing(path: Path) -> Path:
    """The deepest part of ``path`` that exists (``path`` itself if it does): where creating it would start.

    Example:
        >>> deepest_existing(Path("/no/such/folder"))
        PosixPath('/')
    """
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def check_output_folder(
    path: Union[str, os.PathLike], argument: str, *, existing: Iterable[str] = (), overwrite: bool = False
) -> Path:
    """Fail unless ``path`` is a folder that exists or can be created, and (unless ``overwrite``) holds none of
    the files in ``existing``.

    Args:
        path: the output folder.
        argument: its argument's name, for the message (``"out"``, ``"output"``).
        existing: names inside the folder that a previous run wrote and that this one would replace.
        overwrite: allow replacing them.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        InvalidArgumentError: ``path`` (or a folder above it) is a file, it cannot be created or written, or
            it holds earlier results and ``overwrite`` is false.
    """
    text = os.fspath(path)
    if not text.strip():
        raise InvalidArgumentError(f"{argument} is an empty path; pass a folder", argument=argument, value=path)
    folder = Path(text).expanduser()
    if folder.exists() and not folder.is_dir():
        raise InvalidArgumentError(
            f"{argument} {folder} is a file, not a folder; pass a folder (it is created if missing)",
            argument=argument,
            value=path,
        )
    nearest = deepest_existing(folder)  # must be a writable folder
    if nearest.exists() and not nearest.is_dir():
        raise InvalidArgumentError(
            f"{argument} {folder} cannot be created: {nearest} is a file, not a folder", argument=argument, value=path
        )
    if not os.access(nearest, os.W_OK | os.X_OK):
        raise InvalidArgumentError(
            f"{argument} {folder} cannot be written: {nearest} is not writable", argument=argument, value=path
        )
    if folder.is_dir() and not overwrite:
        found = sorted(name for name in existing if (folder / name).exists())
        if found:
            raise InvalidArgumentError(
                f"{argument} {folder} already holds {', '.join(found)} from an earlier run; pass overwrite=True "
                "(--overwrite) to replace them, or another folder",
                argument=argument,
                value=path,
            )
    return folder


def clear_outputs(folder: Union[str, os.PathLike], names: Iterable[str]) -> None:
    """Remove the files and folders ``names`` of ``folder`` that exist (what ``overwrite=True`` replaces)."""
    for name in names:
        target = Path(folder) / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
