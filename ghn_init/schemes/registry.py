"""The init-scheme registry: ``list_schemes``, ``register_scheme``, ``get_scheme`` (the names ``compare`` and
``ghn-init compare --inits`` accept)."""

from __future__ import annotations

import fnmatch
import warnings
from typing import Any, Callable

from ..errors import InvalidArgumentError

__all__ = ["Scheme", "register_scheme", "get_scheme", "list_schemes", "is_scheme"]

# A scheme initializes a model in place: scheme(model, *, data=None, generator=None) -> SchemeReport or Report
Scheme = Callable[..., Any]

_SCHEMES: dict[str, Scheme] = {}


def register_scheme(name: str, fn: Scheme) -> Scheme:
    """Register ``fn`` as the init scheme ``name``; a name registered before is replaced, with a warning (as timm).

    Args:
        name: the name to use in :func:`get_scheme`, ``compare(inits=...)`` and ``--inits`` (no comma, and not
            starting with ``ghn:``, which names GHN schemes).
        fn: ``fn(model, *, data=None, generator=None)`` that initializes ``model`` in place and returns what it
            touched (a :class:`~ghn_init.schemes.SchemeReport`, a Report, or None).

    Returns:
        ``fn``, so it can be a decorator's result.

    Raises:
        InvalidArgumentError: a bad name or a non-callable ``fn``.

    Example:
        >>> import ghn_init, torch.nn as nn
        >>> def zeros(model, *, data=None, generator=None):
        ...     for p in model.parameters():
        ...         nn.init.zeros_(p)
        >>> _ = ghn_init.register_scheme("zeros", zeros)
        >>> ghn_init.list_schemes("zer*")
        ['zero', 'zero-residual', 'zeros']
    """
    if not isinstance(name, str) or not name or name != name.strip() or "," in name or name.startswith("ghn:"):
        raise InvalidArgumentError(
            f"scheme name must be a non-empty string without commas or surrounding spaces, not starting with 'ghn:' "
            f"(GHN schemes are named by their source), got {name!r}",
            argument="name",
            value=name,
        )
    if not callable(fn):
        raise InvalidArgumentError(
            f"scheme {name!r} must be a callable (model, *, data=None, generator=None), got {type(fn).__name__}",
            argument="fn",
            value=fn,
        )
    if name in _SCHEMES and _SCHEMES[name] is not fn:
        warnings.warn(f"init scheme {name!r} was registered before; replacing it", UserWarning, stacklevel=2)
    _SCHEMES[name] = fn
    return fn


def _register_builtin(name: str, fn: Scheme) -> None:
    _SCHEMES[name] = fn


def is_scheme(name: str) -> bool:
    """Whether ``name`` is registered (``ghn:SOURCE`` specs are valid without being registered)."""
    return name in _SCHEMES


def get_scheme(name: str, **apply_kwargs: Any) -> Scheme:
    """The init scheme ``name``: a registered name (:func:`list_schemes`) or ``ghn:SOURCE[+POSTPROCESS][+calibrate]``.

    ``SOURCE`` is anything :func:`ghn_init.load_ghn` accepts (``bundled``, a registry name, a folder, ``hf://...``);
    ``POSTPROCESS`` is ``none`` or parts of :data:`ghn_init.postprocess.POSTPROCESS_PARTS` joined by ``+`` (default:
    the GHN's recommendation); ``+calibrate`` calibrates the predictions on the scheme's ``data``.

    Args:
        name: the scheme's name.
        **apply_kwargs: for ``ghn:`` schemes, further :func:`ghn_init.apply` options.

    Returns:
        The callable ``scheme(model, *, data=None, generator=None)``.

    Raises:
        InvalidArgumentError: an unknown name (the message lists the registered ones).

    Example:
        >>> import ghn_init, torchvision
        >>> report = ghn_init.get_scheme("orthogonal")(torchvision.models.resnet18())
        >>> report.touched[0]
        'conv1.weight'
    """
    from .ghn import parse_ghn_spec

    spec = name.strip() if isinstance(name, str) else name
    if spec in _SCHEMES:
        return _SCHEMES[spec]
    if isinstance(spec, str) and spec.startswith("ghn:"):
        return parse_ghn_spec(spec, **apply_kwargs)
    raise InvalidArgumentError(
        f"unknown init scheme {name!r}; use one of {', '.join(list_schemes())}, ghn:SOURCE[+POSTPROCESS][+calibrate] "
        "(e.g. ghn:bundled+orth), or pass a callable (model) -> None",
        argument="inits",
        value=name,
    )


def list_schemes(pattern: str = "*") -> list[str]:
    """Registered scheme names matching ``pattern`` (``fnmatch`` wildcards), sorted.

    Example:
        >>> import ghn_init
        >>> ghn_init.list_schemes("kaiming*")
        ['kaiming-normal-fan-in', 'kaiming-normal-fan-out']
    """
    return sorted(n for n in _SCHEMES if fnmatch.fnmatchcase(n, pattern))
