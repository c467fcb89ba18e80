"""Init schemes as a public registry: the same names in Python (``get_scheme``) and in ``ghn-init compare --inits``.

    import ghn_init
    ghn_init.list_schemes()                       # ['default', 'ghn:bundled', ..., 'zero-residual']
    report = ghn_init.get_scheme("lsuv")(model, data=images)   # in place; says what it touched
    ghn_init.register_scheme("mine", my_init)     # then compare(inits="default,mine")

A scheme is a callable ``scheme(model, *, data=None, generator=None)`` that initializes ``model`` in place and
returns what it touched: a :class:`SchemeReport` (a :class:`ghn_init.Report` for GHN schemes). Data-dependent
schemes (``lsuv``, ``ghn:...+calibrate``) need ``data``; a scheme that does not apply to a model raises
:class:`ghn_init.UnsupportedModelError` and changes nothing.
"""

from .base import SchemeReport, input_batch, matrix_weights
from .classic import (
    default,
    kaiming_normal_fan_in,
    kaiming_normal_fan_out,
    orthogonal,
    orthogonal_keepnorm,
    xavier_normal,
    xavier_uniform,
)
from .ghn import ghn_scheme, parse_ghn_spec
from .gradinit import gradinit
from .lsuv import lsuv
from .mimetic import mimetic
from .registry import Scheme, _register_builtin, get_scheme, is_scheme, list_schemes, register_scheme
from .zero import zero
from .zero_residual import zero_residual

__all__ = [
    "Scheme",
    "SchemeReport",
    "register_scheme",
    "get_scheme",
    "list_schemes",
    "is_scheme",
    "default",
    "orthogonal",
    "orthogonal_keepnorm",
    "kaiming_normal_fan_in",
    "kaiming_normal_fan_out",
    "xavier_uniform",
    "xavier_normal",
    "lsuv",
    "mimetic",
    "zero_residual",
    "zero",
    "gradinit",
    "ghn_scheme",
    "parse_ghn_spec",
    "input_batch",
    "matrix_weights",
]

BUILTIN: dict[str, Scheme] = {
    "default": default,
    "orthogonal": orthogonal,
    "orthogonal+keepnorm": orthogonal_keepnorm,
    "kaiming-normal-fan-in": kaiming_normal_fan_in,
    "kaiming-normal-fan-out": kaiming_normal_fan_out,
    "xavier-uniform": xavier_uniform,
    "xavier-normal": xavier_normal,
    "lsuv": lsuv,
    "mimetic": mimetic,
    "zero-residual": zero_residual,
    "zero": zero,
    "gradinit": gradinit,
    "ghn:bundled": ghn_scheme("bundled"),
    "ghn:bundled+calibrate": ghn_scheme("bundled", calibrate=True),
}
for _name, _fn in BUILTIN.items():
    _register_builtin(_name, _fn)
