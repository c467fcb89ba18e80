"""Argument checks of the public entry points (``apply``, ``predict``, ``write``, ``trace``, ``load_ghn``).

Each check takes the argument's name and value and raises :class:`~ghn_init.errors.InvalidArgumentError` (or
:class:`~ghn_init.errors.InvalidArgumentTypeError`, also a ``TypeError``, for a value of the wrong type) with
one line that names the argument, what was given and what to pass. The entry points call them before doing
any work, so a bad argument never reaches torch, where it would fail later with an untyped error (``apply([])``
was an ``IndexError``, ``input_size=(3, -1, 5)`` a ``RuntimeError`` from ``torch.zeros``).

Example:
    >>> try:
    ...     check_input_size((3, -1, 5))
    ... except InvalidArgumentError as e:
    ...     print(e.argument, e.value)
    input_size (3, -1, 5)
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping, Optional, Sequence

import torch
import torch.nn as nn

from .errors import InvalidArgumentError, InvalidArgumentTypeError

__all__ = [
    "check_flag",
    "check_models",
    "check_ghn_source",
    "check_input_size",
    "check_generator",
    "check_example_inputs",
    "check_example_kwargs",
    "check_choice",
    "check_revision",
    "check_model",
    "check_max_shape",
    "check_positive_int",
    "check_finite",
    "check_seed",
    "check_hub_options",
]


def _shown(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_flag(name: str, value: Any) -> None:
    """``value`` is a bool (``strict="yes"`` would otherwise count as true)."""
    if not isinstance(value, bool):
        raise InvalidArgumentTypeError(
            f"{name} must be True or False, got {_shown(value)}", argument=name, value=value
        )


def check_models(model: Any, is_program: Any) -> None:
    """``model`` is an ``nn.Module``, an ExportedProgram, or a non-empty list/tuple of them."""
    if isinstance(model, (list, tuple)):
        if not model:
            raise InvalidArgumentError(
                "model is an empty list; pass an nn.Module or a non-empty list of them", argument="model", value=model
            )
        items = list(model)
    else:
        items = [model]
    for m in items:
        if not (isinstance(m, nn.Module) or is_program(m)):
            raise InvalidArgumentTypeError(
                f"model must be a torch.nn.Module (or a list of them), got {type(m).__name__}; build it first, "
                "e.g. torchvision.models.get_model(name) or ghn_init.models.create_model(name)",
                argument="model",
                value=m,
            )


def check_ghn_source(value: Any, ghn_type: type, name: str = "ghn") -> None:
    """``ghn`` / ``source`` is None, a loaded GHN, a non-empty string or a path."""
    if value is None or isinstance(value, ghn_type):
        return
    if isinstance(value, (str, os.PathLike)):
        if not os.fspath(value).strip():
            raise InvalidArgumentError(
                "the GHN source is an empty string; pass 'bundled', a registry name (ghn_init.list_ghns()), a "
                "path or hf://owner/repo/file, or None for the default GHN",
                argument=name,
                value=value,
            )
        return
    raise InvalidArgumentTypeError(
        f"{name} must be a GHN source (a registry name, 'bundled', a path, hf://...) or a loaded GHN, got "
        f"{type(value).__name__} {_shown(value)}",
        argument=name,
        value=value,
    )


def check_input_size(value: Optional[Sequence[int]], name: str = "input_size") -> None:
    """``input_size`` is None or a non-empty sequence of positive ints: ``(C, H, W)``, ``(C, T, H, W)`` for video,
    ``(C, L)`` or ``(F,)``."""
    if value is None:
        return
    ok = (
        isinstance(value, (tuple, list, torch.Size))
        and len(value) >= 1
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    )
    if not ok:
        raise InvalidArgumentError(
            f"{name} must be (C, H, W) of positive ints, e.g. (3, 224, 224); got {_shown(value)}",
            argument=name,
            value=value,
        )
    if math.prod(value) > MAX_SAMPLE_ELEMENTS:  # torch cannot even describe the batch: an overflow error, untyped
        raise InvalidArgumentError(
            f"{name} {_shown(value)} has more elements per sample than torch can index (2**62); pass the size "
            "the model is meant for, e.g. (3, 224, 224)",
            argument=name,
            value=value,
        )


MAX_SAMPLE_ELEMENTS = 2**62  # a batch of 2 samples must stay within torch's int64 sizes


def check_generator(value: Any) -> None:
    """``generator`` is None or a CPU ``torch.Generator``."""
    if value is None:
        return
    if not isinstance(value, torch.Generator):
        raise InvalidArgumentTypeError(
            f"generator must be a torch.Generator, e.g. torch.Generator().manual_seed(0), got {_shown(value)}",
            argument="generator",
            value=value,
        )
    if value.device.type != "cpu":
        raise InvalidArgumentError(
            f"generator must be a CPU torch.Generator (draws are made on the CPU, then moved), got one on "
            f"{value.device}",
            argument="generator",
            value=value,
        )


def check_example_inputs(value: Any) -> None:
    """``example_inputs`` is None, a tensor or a tuple/list of positional arguments."""
    if value is None or isinstance(value, (tuple, list, torch.Tensor)):
        return
    raise InvalidArgumentTypeError(
        f"example_inputs must be a tuple of the forward's positional arguments, e.g. (x,), got "
        f"{type(value).__name__} {_shown(value)}",
        argument="example_inputs",
        value=value,
    )


def check_example_kwargs(value: Any) -> None:
    """``example_kwargs`` is None or a mapping of keyword names to values."""
    if value is None:
        return
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise InvalidArgumentTypeError(
            f"example_kwargs must be a dict of the forward's keyword arguments, e.g. {{'pixel_values': x}}, got "
            f"{type(value).__name__} {_shown(value)}",
            argument="example_kwargs",
            value=value,
        )


def check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    """``value`` is one of ``choices``."""
    if value not in choices:
        raise InvalidArgumentError(
            f"unknown {name} {_shown(value)}; choose one of {', '.join(choices)}", argument=name, value=value
        )


def check_revision(value: Any) -> None:
    """``revision`` is None or a non-empty string (a branch, tag or commit hash)."""
    if value is None:
        return
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgumentTypeError(
            f"revision must be a branch, tag or commit hash (a non-empty string), got {_shown(value)}",
            argument="revision",
            value=value,
        )


def check_positive_int(name: str, value: Any) -> None:
    """``value`` is an int >= 1 (``steps``, ``batch_size``, ...)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(
            f"{name} must be a positive whole number, got {_shown(value)}", argument=name, value=value
        )


def check_int_at_least(name: str, value: Any, minimum: int, hint: str = "") -> None:
    """``value`` is an int >= ``minimum`` (``hint`` is appended to the message, e.g. how to get the default)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidArgumentError(
            f"{name} must be a whole number >= {minimum}{hint}, got {value!r}", argument=name, value=value
        )


def check_fraction(name: str, value: Any, *, upper_open: bool) -> None:
    """``value`` is a finite number in [0, 1) (``upper_open``) or [0, 1]."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not (ok and 0 <= value and (value < 1 if upper_open else value <= 1)):
        what = "must be in [0, 1)" if upper_open else "must be between 0 and 1"
        raise InvalidArgumentError(f"{name} {what}, got {value!r}", argument=name, value=value)


def check_text(name: str, value: Any) -> None:
    """``value`` is a non-empty string or path."""
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value).strip():
        raise InvalidArgumentError(f"{name} must be a non-empty string, got {value!r}", argument=name, value=value)


def check_finite(name: str, value: Any, *, positive: bool = True) -> None:
    """``value`` is a finite number, > 0 with ``positive`` (else >= 0): ``lr=nan`` trained and wrote NaN results."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > 0 if positive else value >= 0)
    if not ok:
        what = "a finite number > 0" if positive else "a finite number >= 0"
        raise InvalidArgumentError(f"{name} must be {what}, got {_shown(value)}", argument=name, value=value)


MAX_SEED = 2**63 - 1  # torch.manual_seed's range (a larger one failed with "Overflow when unpacking long long")


def check_seed(name: str, value: Any) -> None:
    """``value`` is an int seed torch accepts: 0 <= seed <= 2**63 - 1."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise InvalidArgumentError(
            f"{name} must be a whole number from 0 to 2**63 - 1, got {_shown(value)}", argument=name, value=value
        )


def check_model(model: Any, name: str = "model") -> None:
    """``model`` is an ``nn.Module``."""
    if not isinstance(model, nn.Module):
        raise InvalidArgumentTypeError(
            f"{name} must be a torch.nn.Module, got {type(model).__name__}", argument=name, value=model
        )


def check_max_shape(value: Any, name: str = "max_shape") -> None:
    """``max_shape`` is ``(out, in, k, k)``: four positive ints (``ghn.config.max_shape``)."""
    ok = (
        isinstance(value, (tuple, list, torch.Size))
        and len(value) == 4
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    )
    if not ok:
        raise InvalidArgumentError(
            f"{name} must be the GHN's (out, in, k, k) of positive ints, e.g. ghn.config.max_shape; got "
            f"{_shown(value)}",
            argument=name,
            value=value,
        )


def check_hub_options(cache_dir: Any, token: Any) -> None:
    """``cache_dir`` is None or a non-empty path; ``token`` is None, a bool or a non-empty string."""
    if cache_dir is not None and not (isinstance(cache_dir, (str, os.PathLike)) and os.fspath(cache_dir).strip()):
        raise InvalidArgumentTypeError(
            f"cache_dir must be a folder path (or None for huggingface_hub's cache), got {_shown(cache_dir)}",
            argument="cache_dir",
            value=cache_dir,
        )
    if token is not None and not isinstance(token, bool) and not (isinstance(token, str) and token.strip()):
        raise InvalidArgumentTypeError(
            f"token must be a Hugging Face token string, True (the saved login) or None, got {type(token).__name__}",
            argument="token",
            value="<hidden>" if isinstance(token, str) else token,
        )
