"""Every bad argument of a public entry point is a typed, one-line error that names it; the model is untouched.

Table-driven: a new entry-point argument gets a row here. Each row was an untyped error before (IndexError,
os.fspath's TypeError, torch.zeros' RuntimeError, ...) or a plain ValueError/TypeError.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest
import torch
import torch.nn as nn

import ghn_init

from .conftest import assert_unchanged, snapshot


def small() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


def apply(**kwargs: Any) -> Callable[[nn.Module], Any]:
    return lambda m: ghn_init.apply(m, **{"ghn": "bundled", "postprocess": "none", **kwargs})


def predict(**kwargs: Any) -> Callable[[nn.Module], Any]:
    return lambda m: ghn_init.predict(m, **{"ghn": "bundled", "postprocess": "none", **kwargs})


def trace(**kwargs: Any) -> Callable[[nn.Module], Any]:
    return lambda m: ghn_init.trace(m, **kwargs)


def load(source: Any = "bundled", **kwargs: Any) -> Callable[[nn.Module], Any]:
    return lambda m: ghn_init.load_ghn(source, **kwargs)


CASES: list[tuple[str, Callable[[nn.Module], Any], str]] = [
    ("apply an empty list", lambda m: ghn_init.apply([], "bundled"), "model"),
    ("apply a string", lambda m: ghn_init.apply("resnet18", "bundled"), "model"),
    ("ghn=123", apply(ghn=123), "ghn"),
    ("ghn=''", apply(ghn=""), "ghn"),
    ("input_size a string", apply(input_size="224"), "input_size"),
    ("input_size negative", apply(input_size=(3, -1, 5)), "input_size"),
    ("input_size of floats", apply(input_size=(3.0, 32, 32)), "input_size"),
    ("unknown tracer", apply(tracer="jit"), "tracer"),
    ("unknown post-processing", apply(postprocess="bogus"), "postprocess"),
    ("post-processing of the wrong type", apply(postprocess=5), "postprocess"),
    ("generator=123", apply(generator=123), "generator"),
    ("example_kwargs a list", apply(example_kwargs=[1, 2]), "example_kwargs"),
    ("example_inputs an int", apply(example_inputs=5), "example_inputs"),
    ("strict a string", apply(strict="yes"), "strict"),
    ("predict_classifier None", apply(predict_classifier=None), "predict_classifier"),
    ("predict_frozen a string", apply(predict_frozen="no"), "predict_frozen"),
    ("dry_run an int", predict(dry_run=1), "dry_run"),
    ("write a dry run", lambda m: ghn_init.predict(m, "bundled", dry_run=True).write(), "predictions"),
    ("write a model", lambda m: ghn_init.write([m]), "predictions"),
    ("trace with a negative size", trace(input_size=(3, -1, 5)), "input_size"),
    ("trace with an unknown tracer", trace(tracer="y"), "tracer"),
    ("trace a model without parameters", lambda m: ghn_init.trace(nn.ReLU()), "model"),
    ("load_ghn('') (read the current folder)", load(""), "source"),
    ("load_ghn(123)", load(123), "source"),
    ("sha256 not hex", load(sha256="zz"), "sha256"),
    ("sha256 an int", load(sha256=5), "sha256"),
    ("unknown device", load(device="tpu9"), "device"),
    ("a device this machine lacks", load(device="cuda:7" if not torch.cuda.is_available() else "tpu9"), "device"),
    ("malformed hf://", load("hf://x"), "source"),
    ("revision an int", load("hf://a/b/c.pt", revision=5), "revision"),
    ("local_files_only a string", load(local_files_only="yes"), "local_files_only"),
]


@pytest.mark.parametrize("what, call, argument", CASES, ids=[c[0] for c in CASES])
def test_a_bad_argument_is_a_typed_one_line_error_and_changes_nothing(
    what: str, call: Callable[[nn.Module], Any], argument: str
) -> None:
    model = small()
    model.train()
    before = snapshot(model)
    with pytest.raises(ghn_init.InvalidArgumentError) as e:
        call(model)
    assert e.value.argument == argument, str(e.value)
    assert "\n" not in str(e.value) and str(e.value)
    assert_unchanged(model, before)
    assert model.training


def test_type_errors_stay_type_errors() -> None:
    # Code that caught the TypeError Python raised before (e.g. for a non-module) keeps working.
    with pytest.raises(TypeError):
        ghn_init.apply("resnet18", "bundled")
    assert issubclass(ghn_init.InvalidArgumentTypeError, ghn_init.InvalidArgumentError)


def test_a_huge_input_size_is_recorded_on_meta_without_allocating() -> None:
    # input_size=(3, 10**6, 10**6) allocated 24 TB of real zeros before the meta recorder ran.
    graph = ghn_init.trace(small(), input_size=(3, 10**6, 10**6))
    assert graph.tracer == "autograd-meta" and len(graph.nodes) > 3
