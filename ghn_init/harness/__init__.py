"""The init-comparison harness: ``ghn_init.compare(models, inits, data)`` or ``ghn-init compare``.

A scheme is any callable ``(model) -> None`` that initializes a model in place; ``default``,
``orthogonal`` and ``ghn:SOURCE[+POSTPROCESS]`` are built in.
"""

from .data import Data, digits, from_datasets, image_folder, load_data
from .models import build_model, small_vit
from .runner import Results, Run, compare, evaluate
from .schemes import default, ghn_scheme, orthogonal, parse_scheme

__all__ = [
    "compare",
    "Results",
    "Run",
    "evaluate",
    "Data",
    "digits",
    "image_folder",
    "from_datasets",
    "load_data",
    "build_model",
    "small_vit",
    "default",
    "orthogonal",
    "ghn_scheme",
    "parse_scheme",
]
