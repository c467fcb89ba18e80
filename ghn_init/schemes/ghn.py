"""``ghn:SOURCE[+POSTPROCESS][+calibrate]``: parameters predicted by a Graph HyperNetwork, as an init scheme."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
import torch.nn as nn

from ..errors import InvalidArgumentError

__all__ = ["ghn_scheme", "parse_ghn_spec"]

CALIBRATE = "calibrate"


def ghn_scheme(
    source: Any = "bundled", postprocess: Optional[str] = "default", calibrate: bool = False, **apply_kwargs: Any
):
    """A scheme that runs :func:`ghn_init.apply` with a GHN (loaded once, on first use, and cached).

    Args:
        source: anything :func:`ghn_init.load_ghn` accepts, or a loaded GHN.
        postprocess: passed to ``apply`` (``"default"``: the GHN's recommendation).
        calibrate: pass the scheme's ``data`` on to ``apply(..., data=)``: the predictions are calibrated on it
            (:func:`ghn_init.calibrate.calibrate`). Without data the scheme fails (it would not calibrate).
        **apply_kwargs: further ``apply`` options (``predict_classifier``, ``input_size``...).

    Returns:
        A callable ``(model, *, data=None, generator=None, input_size=None) -> Report``.

    Example:
        >>> scheme = ghn_scheme("bundled", "orth")
        >>> report = scheme(torchvision.models.resnet18())  # doctest: +SKIP
    """

    def scheme(
        model: nn.Module,
        *,
        data: Any = None,
        generator: Optional[torch.Generator] = None,
        input_size: Optional[Sequence[int]] = None,
    ):
        from ..api import apply

        kwargs = dict(apply_kwargs)
        if input_size is not None:
            kwargs.setdefault("input_size", tuple(input_size))
        if generator is not None:
            kwargs.setdefault("generator", generator)
        if calibrate:
            if data is None:
                raise InvalidArgumentError(
                    "ghn:...+calibrate calibrates on data: pass data= (a batch of training inputs or a DataLoader)",
                    argument="data",
                )
            kwargs["data"] = data
        return apply(model, source, postprocess=postprocess, **kwargs)  # load_ghn caches a loaded GHN

    scheme.__name__ = f"ghn:{source if isinstance(source, str) else type(source).__name__}"
    return scheme


def parse_ghn_spec(spec: str, **apply_kwargs: Any):
    """The scheme named ``ghn:SOURCE[+POSTPROCESS][+calibrate]``.

    Raises:
        InvalidArgumentError: no source, or an unknown post-processing part.
    """
    from ..postprocess import PostProcess

    source, _, post = spec[len("ghn:") :].partition("+")
    if not source:
        raise InvalidArgumentError(
            f"init scheme {spec!r} names no GHN; use ghn:bundled or ghn:SOURCE[+POSTPROCESS][+calibrate]",
            argument="inits",
            value=spec,
        )
    parts = [p for p in post.split("+") if p] if post else []
    calibrate = CALIBRATE in parts
    parts = [p for p in parts if p != CALIBRATE]
    try:
        postprocess = str(PostProcess.parse("+".join(parts))) if parts else "default"
    except ValueError as e:
        raise InvalidArgumentError(str(e), argument="inits", value=spec) from None
    return ghn_scheme(source, postprocess, calibrate=calibrate, **apply_kwargs)
