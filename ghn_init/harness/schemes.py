"""Initialization schemes for :func:`ghn_init.compare`: named callables ``(model) -> None`` that initialize in place."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Union

import torch
import torch.nn as nn

__all__ = ["Scheme", "default", "orthogonal", "orthogonal_keepnorm", "ghn_scheme", "parse_scheme", "resolve_schemes"]

Scheme = Callable[[nn.Module], Any]  # may return a ghn_init Report (kept in the results)


def default(model: nn.Module) -> None:
    """Keep the model's own initialization (PyTorch's or the library's defaults)."""


def _matrix_weights(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The weights the ``orth`` post-processing would orthogonalize: every trainable tensor whose role is
    :attr:`~ghn_init.postprocess.Role.MATRIX` (the same rule, :func:`~ghn_init.postprocess.roles_of`) but the
    classifier, the last one. A ConvNeXt ``layer_scale`` (``(C, 1, 1)``) is a gain and a ViT's ``pos_embedding``
    an embedding, neither a matrix.
    """
    from ..planning import writable_slots
    from ..postprocess import Role, roles_of

    params = {id(p) for p in model.parameters()}
    tensors = {s.name: (s, s.tensor) for s in writable_slots(model).values()}
    roles = roles_of(tensors)
    found = [(n, t) for n, (_, t) in tensors.items() if roles[n] is Role.MATRIX and id(t) in params]
    return found[:-1]  # the last one is the classifier, left as it is (as for GHN predictions)


@torch.no_grad()
def orthogonal(model: nn.Module) -> None:
    """Random orthogonal init (``torch.nn.init.orthogonal_``, gain 1) of every weight matrix.

    The same tensors, with the same scale, as the ``orth`` post-processing of GHN predictions
    touches (the classifier, position embeddings, biases and norm layers keep their defaults), so
    comparing ``orthogonal`` with ``ghn:SOURCE+orth`` shows what the GHN's predictions add.
    """
    for _, p in _matrix_weights(model):
        nn.init.orthogonal_(p)


@torch.no_grad()
def orthogonal_keepnorm(model: nn.Module) -> None:
    """:func:`orthogonal`, each matrix then scaled back to the Frobenius norm it had (the model's own init).

    The baseline for GHN post-processing with ``keepnorm``: random directions at the model's scale.
    """
    for _, p in _matrix_weights(model):
        norm = p.norm()
        nn.init.orthogonal_(p)
        if norm > 0:
            p.mul_(norm / p.norm())


def ghn_scheme(source: Any = "bundled", postprocess: Optional[str] = "default", **apply_kwargs: Any) -> Scheme:
    """A scheme that runs :func:`ghn_init.apply` with a GHN (loaded once, on first use).

    Args:
        source: anything :func:`ghn_init.load_ghn` accepts, or a loaded GHN.
        postprocess: passed to ``apply`` (``"default"``: the GHN's recommendation).
        **apply_kwargs: further ``apply`` options (``predict_classifier``, ``input_size``...).

    Returns:
        A callable ``(model, input_size=None) -> Report``; :func:`ghn_init.compare` passes its image
        size, so models that fix their input size (ViTs) are recorded at that size.
    """

    def scheme(model: nn.Module, input_size: Optional[tuple] = None):
        from ..api import apply

        kwargs = dict(apply_kwargs)
        if input_size is not None:
            kwargs.setdefault("input_size", input_size)
        return apply(model, source, postprocess=postprocess, **kwargs)  # load_ghn reuses a loaded GHN

    scheme.accepts_input_size = True  # type: ignore[attr-defined]  # compare passes the image size
    return scheme


BUILTIN: dict[str, Scheme] = {"default": default, "orthogonal": orthogonal, "orthogonal+keepnorm": orthogonal_keepnorm}


def parse_scheme(spec: str, **apply_kwargs: Any) -> Scheme:
    """A scheme from its name: ``default``, ``orthogonal``, ``orthogonal+keepnorm``, ``ghn:SOURCE`` or
    ``ghn:SOURCE+POSTPROCESS``.

    ``SOURCE`` is anything :func:`ghn_init.load_ghn` accepts (``bundled``, a registry name, a folder,
    ``hf://...``); ``POSTPROCESS`` is ``none`` or parts of
    :data:`ghn_init.postprocess.POSTPROCESS_PARTS` joined by ``+`` (default: the GHN's recommendation).

    Raises:
        ValueError: an unknown name or an invalid post-processing.

    Example:
        >>> scheme = parse_scheme("ghn:bundled+orth")
    """
    from ..postprocess import PostProcess

    spec = spec.strip()
    if spec in BUILTIN:
        return BUILTIN[spec]
    if spec.startswith("ghn:"):
        source, _, post = spec[len("ghn:") :].partition("+")
        if not source:
            raise ValueError(f"init scheme {spec!r} names no GHN; use ghn:bundled or ghn:SOURCE[+POSTPROCESS]")
        return ghn_scheme(source, str(PostProcess.parse(post)) if post else "default", **apply_kwargs)
    raise ValueError(
        f"unknown init scheme {spec!r}; use default, orthogonal, orthogonal+keepnorm, ghn:SOURCE or "
        "ghn:SOURCE+POSTPROCESS "
        "(e.g. ghn:bundled+orth), or pass a callable (model) -> None"
    )


def resolve_schemes(
    inits: Union[str, Mapping[str, Union[str, Scheme]], list], **apply_kwargs: Any
) -> dict[str, Scheme]:
    """Names -> callables, from a comma-separated string, a list of names/callables, or a dict."""
    if isinstance(inits, str):
        inits = [s for s in inits.split(",") if s.strip()]
    if isinstance(inits, Mapping):
        items = list(inits.items())
    else:
        items = [(s if isinstance(s, str) else getattr(s, "__name__", repr(s)), s) for s in inits]
    if not items:
        raise ValueError("no init scheme given; e.g. default,orthogonal,ghn:bundled")
    out: dict[str, Scheme] = {}
    for name, s in items:
        if name in out:
            raise ValueError(f"init scheme {name!r} is given twice")
        if isinstance(s, str):
            out[name] = parse_scheme(s, **apply_kwargs)
        elif callable(s):
            out[name] = s
        else:
            raise TypeError(
                f"init scheme {name!r} must be a name or a callable (model) -> None, got {type(s).__name__}"
            )
    return out
