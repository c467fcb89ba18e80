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


X = torch.zeros(1, 3, 8, 8)

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
    # Found by a second sweep (each an untyped error, a silent no-op or a multi-line message before):
    ("input_size and example_inputs", apply(input_size=(3, 8, 8), example_inputs=(X,)), "input_size"),
    ("input_size beyond torch's sizes", apply(input_size=(3, 10**30, 10**30)), "input_size"),
    ("post-processing noise < 0", apply(postprocess="noise=-1"), "postprocess"),
    ("post-processing noise nan", apply(postprocess="noise=nan"), "postprocess"),
    ("post-processing noise= empty", apply(postprocess="orth+noise="), "postprocess"),
    ("data with NaN inputs", apply(data=torch.full((4, 3, 8, 8), float("nan"))), "data"),
    ("data with no inputs", apply(data=torch.zeros(0, 3, 8, 8)), "data"),
    ("data with one label for two inputs", apply(data=(torch.zeros(2, 3, 8, 8), torch.zeros(1).long())), "data"),
    ("data the model cannot run on", apply(data=torch.zeros(2, 5)), "data"),
    ("write(None)", lambda m: ghn_init.write(None), "predictions"),
    ("write(prediction), not a list", lambda m: ghn_init.write(ghn_init.predict(m, "bundled")), "predictions"),
    ("trace with a negative virtual_edge_cutoff", trace(virtual_edge_cutoff=-1), "virtual_edge_cutoff"),
    ("trace with virtual_edge_cutoff a string", trace(virtual_edge_cutoff="50"), "virtual_edge_cutoff"),
    ("plan(None, ...)", lambda m: ghn_init.plan(None, m, (64, 64, 16, 16)), "graph"),
    ("plan with another model's graph", lambda m: ghn_init.plan(ghn_init.trace(small()), m, (64, 64, 16, 16)), "graph"),
    ("plan of a non-module", lambda m: ghn_init.plan(ghn_init.trace(m), "model", (64, 64, 16, 16)), "model"),
    ("plan with max_shape None", lambda m: ghn_init.plan(ghn_init.trace(m), m, None), "max_shape"),
    ("plan with a 1-d max_shape", lambda m: ghn_init.plan(ghn_init.trace(m), m, (64,)), "max_shape"),
    ("revision for the bundled GHN", load(revision="main"), "revision"),
    ("revision for a GHN", lambda m: ghn_init.load_ghn(ghn_init.load_ghn("bundled"), revision="1"), "revision"),
    ("two revisions", load("hf://a/b/c.pt@v1", revision="v2"), "revision"),
    ("device a list (was a multi-line message)", load(device=["cpu"]), "device"),
    ("device a float", load(device=1.5), "device"),
    ("cache_dir an int", load("hf://a/b/c.pt", cache_dir=5, local_files_only=True), "cache_dir"),
    ("token an int", load("hf://a/b/c.pt", token=5, local_files_only=True), "token"),
    ("hf:// with '..'", load("hf://a/../b/c.pt", local_files_only=True), "source"),
    ("hf:// with a space", load("hf://a b/c/d.pt", local_files_only=True), "source"),
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


class NeedsRealValues(nn.Module):
    """Data-dependent control flow: recorded only by a real forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return x if x.sum().item() >= 0 else -x


def test_a_huge_input_size_is_refused_before_a_real_forward_allocates_it() -> None:
    # The real-forward fallback made real zeros of any size: (3, 10**6, 10**6) is 24 TB (an out-of-memory error, or
    # the process killed). It is refused before anything is allocated, with a typed error naming input_size.
    model = NeedsRealValues()
    before = snapshot(model)
    with pytest.raises(ghn_init.TraceError, match=r"real forward: not run: .* GiB .* pass a smaller input_size") as e:
        ghn_init.trace(model, input_size=(3, 10**6, 10**6))
    assert any("not run" in a for a in e.value.attempts)
    assert_unchanged(model, before)
    ghn_init.trace(model, input_size=(3, 16, 16))  # a size that fits still records with a real forward


def test_the_real_forward_limit_is_read_when_recording(monkeypatch: pytest.MonkeyPatch) -> None:
    from ghn_init import constants

    monkeypatch.setattr(constants, "MAX_REAL_INPUT_BYTES", 1000)  # 2 x 3 x 16 x 16 float32 = 6144 bytes
    with pytest.raises(ghn_init.TraceError, match="not run"):
        ghn_init.trace(NeedsRealValues(), input_size=(3, 16, 16))


def test_an_exported_program_with_the_autograd_tracer_is_a_typed_error() -> None:
    program = torch.export.export(small().eval(), (torch.zeros(1, 3, 8, 8),))
    with pytest.raises(ghn_init.InvalidArgumentError, match="tracer='fx'") as e:
        ghn_init.trace(program, tracer="autograd")
    assert e.value.argument == "tracer"


def test_a_folder_without_weights_is_a_typed_error_that_is_still_a_file_not_found(tmp_path) -> None:
    # load_ghn(".") in a folder without model.safetensors was a plain FileNotFoundError.
    with pytest.raises(ghn_init.CheckpointNotFoundError, match="folder without model.safetensors") as e:
        ghn_init.load_ghn(tmp_path)
    assert isinstance(e.value, FileNotFoundError) and e.value.path == tmp_path and "\n" not in str(e.value)
    assert not str(e.value).startswith("[Errno")


def test_a_bad_device_fails_before_the_file_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    import ghn_init.hub as hub

    def must_not_read(*args: Any) -> Any:
        raise AssertionError("the GHN was read before the device was checked")

    monkeypatch.setattr(hub, "load_file", must_not_read)
    hub._CACHE.clear()
    with pytest.raises(ghn_init.InvalidArgumentError) as e:
        ghn_init.load_ghn("ghn_init/bundled", device="tpu9")
    assert e.value.argument == "device"


def test_a_bad_token_is_not_shown_in_the_message() -> None:
    with pytest.raises(ghn_init.InvalidArgumentError) as e:
        ghn_init.load_ghn("hf://a/b/c.pt", token="", local_files_only=True)
    assert e.value.argument == "token" and e.value.value == "<hidden>"
