"""argparse ``type=`` functions shared by the subcommands: a bad value is a one-line usage error naming the flag."""

from __future__ import annotations

import argparse
import math

__all__ = ["positive_int", "finite_float", "is_out_of_memory"]


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1.

    Example:
        >>> positive_int("3")
        3
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def finite_float(text: str) -> float:
    """argparse type: a finite number >= 0 (``nan``, ``inf`` and negative values are refused).

    Example:
        >>> finite_float("0.01")
        0.01
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an allocation failure (``MemoryError``, torch's CPU allocator or CUDA out of memory):
    too large sizes asked for, which the CLI reports as a bad input (exit 2), not as a bug."""
    if isinstance(error, MemoryError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and (
        "can't allocate memory" in text or "DefaultCPUAllocator" in text or "out of memory" in text.lower()
    )
