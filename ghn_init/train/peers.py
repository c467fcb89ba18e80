"""Telling a peer's death from this process's own failure in a distributed (``torchrun``) training run.

When one process of a run dies (killed, out of memory, a bug it reports in its own output), every other
process fails in its next collective operation with the backend's transport error, e.g. gloo's::

    RuntimeError: [.../gloo/transport/tcp/pair.cc:561] Connection closed by peer [127.0.0.1]:21905. This is
    typically caused by a remote worker crashing. ...

That is not a bug of ghn-init and nothing is wrong with the survivor's input, so it must not read "internal
error ... please report it": :func:`peer_failure` turns it into a one-line
:class:`~ghn_init.errors.PeerProcessError` that says where the run can be resumed from.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import torch.distributed as dist

from ..errors import PeerProcessError

__all__ = ["is_peer_failure", "peer_failure"]

# What the backends say when the other end of a connection went away: gloo's TCP transport ("Connection closed by
# peer", "Connection reset by peer", "Broken pipe", "remote worker crashing"), NCCL ("communicator was aborted",
# its watchdog's collective timeout). Matched in lower case.
_PEER_GONE = (
    "closed by peer",
    "reset by peer",
    "broken pipe",
    "remote worker",
    "communicator was aborted",
    "collective operation timeout",
)


def is_peer_failure(error: BaseException, world_size: int) -> bool:
    """Whether ``error``, raised in a run of ``world_size`` processes, means another process went away.

    Example:
        >>> is_peer_failure(RuntimeError("[pair.cc:561] Connection closed by peer [127.0.0.1]:1"), world_size=2)
        True
        >>> is_peer_failure(RuntimeError("[pair.cc:561] Connection closed by peer [127.0.0.1]:1"), world_size=1)
        False
    """
    if world_size < 2 or not isinstance(error, RuntimeError):
        return False
    if isinstance(error, dist.DistError):  # torch's own type for process-group failures
        return True
    text = str(error).lower()
    return any(words in text for words in _PEER_GONE)


def peer_failure(
    error: BaseException, *, rank: int, world_size: int, step: int, checkpoint: Optional[Path]
) -> PeerProcessError:
    """The one-line :class:`~ghn_init.errors.PeerProcessError` for ``error`` (see :func:`is_peer_failure`).

    Example:
        >>> e = peer_failure(RuntimeError("[x/pair.cc:561] Connection closed by peer [127.0.0.1]:21905. More."),
        ...                  rank=0, world_size=2, step=7, checkpoint=None)
        >>> print(e)  # doctest: +NORMALIZE_WHITESPACE
        another process of this 2-process training run stopped or lost its connection while rank 0 was at step
        7 (Connection closed by peer [127.0.0.1]:21905); its own output says why: fix that, then run the same
        command again (no checkpoint was written yet: it starts afresh)
    """
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    first = re.sub(r"^\[[^\]]*\]\s*", "", first)  # gloo's "[source file:line] " prefix
    words = first.split(". ")[0].rstrip(".")[:200]
    resume = (
        f"run the same command again to resume from {checkpoint}"
        if checkpoint is not None and checkpoint.exists()
        else "run the same command again (no checkpoint was written yet: it starts afresh)"
    )
    return PeerProcessError(
        f"another process of this {world_size}-process training run stopped or lost its connection while rank "
        f"{rank} was at step {step} ({words}); its own output says why: fix that, then {resume}",
        rank=rank,
        world_size=world_size,
        step=step,
    )
