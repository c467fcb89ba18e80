"""The init-comparison harness: ``ghn_init.compare(models, inits, data)`` or ``ghn-init compare``.

A scheme is any name of the registry (:func:`ghn_init.list_schemes`, ``ghn:SOURCE[+POSTPROCESS][+calibrate]``) or
a callable ``scheme(model, *, data=None, generator=None)`` (plain ``(model) -> None`` too) that initializes a model
in place.
"""

from .data import Data, digits, from_datasets, image_folder, load_data, per_class_subset, shapes
from .models import build_model, small_vgg, small_vit
from .results import Failure, Results, Run
from .runner import compare, evaluate
from .schemes import default, ghn_scheme, orthogonal, parse_scheme

__all__ = [
    "compare",
    "Results",
    "Run",
    "Failure",
    "evaluate",
    "Data",
    "digits",
    "shapes",
    "per_class_subset",
    "image_folder",
    "from_datasets",
    "load_data",
    "build_model",
    "small_vit",
    "small_vgg",
    "default",
    "orthogonal",
    "ghn_scheme",
    "parse_scheme",
]
