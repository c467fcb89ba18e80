"""The harness's adapter to the init-scheme registry (:mod:`ghn_init.schemes`): names -> callables, and calling a
scheme with what it accepts (``data``, ``generator``, ``input_size``; plain ``(model) -> None`` callables too)."""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import torch
import torch.nn as nn

from ..errors import InvalidArgumentError
from ..schemes import default, get_scheme, ghn_scheme, orthogonal, orthogonal_keepnorm

__all__ = [
    "Scheme",
    "default",
    "orthogonal",
    "orthogonal_keepnorm",
    "ghn_scheme",
    "parse_scheme",
    "resolve_schemes",
    "call_scheme",
]

Scheme = Callable[..., Any]  # may return a SchemeReport or a ghn_init Report (kept in the results)


def parse_scheme(spec: str, **apply_kwargs: Any) -> Scheme:
    """A scheme from its name (:func:`ghn_init.get_scheme`): a registered name or ``ghn:SOURCE[+POSTPROCESS]``.

    Raises:
        InvalidArgumentError: an unknown name or an invalid post-processing (a ``ValueError``).

    Example:
        >>> scheme = parse_scheme("ghn:bundled+orth")
    """
    return get_scheme(spec, **apply_kwargs)


def resolve_schemes(
    inits: Union[str, Mapping[str, Union[str, Scheme]], list], **apply_kwargs: Any
) -> dict[str, Scheme]:
    """Names -> callables, from a comma-separated string, a list of names/callables, or a dict."""
    if isinstance(inits, str):
        inits = [s for s in inits.split(",") if s.strip()]
    if isinstance(inits, Mapping):
        items = list(inits.items())
    else:
        items = [(s.strip() if isinstance(s, str) else getattr(s, "__name__", repr(s)), s) for s in inits]
    if not items:
        raise InvalidArgumentError("no init scheme given; e.g. default,orthogonal,ghn:bundled", argument="inits")
    out: dict[str, Scheme] = {}
    for name, s in items:
        if name in out:
            raise InvalidArgumentError(f"init scheme {name!r} is given twice", argument="inits", value=name)
        if isinstance(s, str):
            out[name] = parse_scheme(s, **apply_kwargs)
        elif callable(s):
            out[name] = s
        else:
            raise TypeError(
                f"init scheme {name!r} must be a name or a callable (model) -> None, got {type(s).__name__}"
            )
    return out


def _accepted(scheme: Scheme) -> Optional[set]:
    """The keyword names ``scheme`` accepts (None: any, it takes ``**kwargs``)."""
    try:
        params = inspect.signature(scheme).parameters.values()
    except (TypeError, ValueError):
        return set()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def call_scheme(
    scheme: Scheme,
    model: nn.Module,
    *,
    data: Any = None,
    generator: Optional[torch.Generator] = None,
    input_size: Optional[Sequence[int]] = None,
) -> Any:
    """Run ``scheme`` on ``model``, passing each of ``data``, ``generator`` and ``input_size`` only if it takes it
    (so ``(model) -> None`` callables from before the registry keep working)."""
    accepted = _accepted(scheme)
    kwargs = {
        k: v
        for k, v in (("data", data), ("generator", generator), ("input_size", input_size))
        if v is not None and (accepted is None or k in accepted)
    }
    if getattr(scheme, "accepts_input_size", False) and input_size is not None:
        kwargs["input_size"] = input_size
    return scheme(model, **kwargs)
