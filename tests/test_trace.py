"""Recording a model never changes it: shared modules, in-place updates, caches, inference mode."""

from __future__ import annotations

import importlib.util
import logging

import pytest
import torch
import torch.nn as nn

import ghn_init
from ghn_init.errors import TraceError
from ghn_init.graph.autograd_trace import _ModuleState, record

from .conftest import tiny_ghn


def _tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters(remove_duplicate=False))
    return {**params, **dict(model.named_buffers(remove_duplicate=False))}


def _snapshot(model: nn.Module) -> dict[str, tuple[int, torch.Tensor]]:
    return {k: (id(t), t.detach().clone()) for k, t in _tensors(model).items()}


def _assert_unchanged(model: nn.Module, snap: dict[str, tuple[int, torch.Tensor]]) -> None:
    now = _tensors(model)
    assert now.keys() == snap.keys()
    for k, t in now.items():
        assert not t.is_meta, f"{k} was left on the meta device"
        assert id(t) == snap[k][0], f"{k} is another tensor object"
        assert torch.equal(t, snap[k][1]), f"{k} was written"


def _shared_block_model() -> nn.Sequential:
    block = nn.Conv2d(8, 8, 3, padding=1)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3), block, nn.ReLU(), block, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)
    )


def test_module_used_twice_keeps_real_parameters_after_trace():
    # issue 11.1: a module reused in a model was left with meta parameters (silent corruption)
    model = _shared_block_model()
    snap = _snapshot(model)
    ghn_init.trace(model)
    _assert_unchanged(model, snap)


def test_module_used_twice_is_written_and_runs_after_apply():
    model = _shared_block_model()
    report = ghn_init.apply(model, tiny_ghn("ghn3"))
    assert not any(p.is_meta for p in model.parameters())
    assert set(report.predicted) >= {"1.weight", "1.bias"}
    out = model(torch.randn(2, 3, 16, 16))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_tied_weights_under_two_names_are_restored():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Conv2d(3, 8, 1)
            self.head = nn.Conv2d(3, 8, 1)
            self.head.weight = self.emb.weight  # one Parameter, two names

        def forward(self, x):
            return self.head(x) + self.emb(x)

    model = Tied()
    snap = _snapshot(model)
    ghn_init.trace(model, (3, 8, 8))
    _assert_unchanged(model, snap)
    assert model.head.weight is model.emb.weight


def test_post_condition_guard_raises_if_a_substitute_stays():
    model = nn.Sequential(nn.Conv2d(3, 4, 1))
    state = _ModuleState(model)
    model[0]._parameters["weight"] = torch.empty(4, 3, 1, 1, device="meta")  # what the old bug did
    with pytest.raises(TraceError, match="substituted tensor"):
        state.check()
    state.restore()
    state.check()
    assert not model[0].weight.is_meta


@pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="timm not installed")
def test_coat_lite_tiny_has_no_meta_parameter_after_apply():
    # issue 11.1: timm's CoaT reuses its conv position encodings (32 meta parameters before the fix)
    import timm

    model = timm.create_model("coat_lite_tiny", num_classes=10)
    ghn_init.apply(model, tiny_ghn("ghn3"))
    assert [n for n, t in _tensors(model).items() if t.is_meta] == []
    assert torch.isfinite(model(torch.randn(1, 3, 224, 224))).all()


class _Counter(nn.Module):
    """Counts its calls in a buffer and keeps an EMA, in place; ``.item()`` forces the real forward pass."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
        self.register_buffer("ema", torch.zeros(4))
        self.plain = torch.zeros(1)  # not a buffer: a plain tensor attribute written in place

    def forward(self, x):
        self.calls += 1
        y = self.conv(x)
        self.ema.mul_(0.9).add_(y.detach().mean((0, 2, 3)), alpha=0.1)
        self.plain += 1
        if y.sum().item() > 1e9:  # data-dependent: cannot run on meta tensors
            return y * 2
        return y


def test_real_forward_fallback_does_not_mutate_buffers(caplog):
    # issue 11.3: the real forward ran on aliases of the model's tensors, in-place updates stayed
    model = _Counter()
    snap = _snapshot(model)
    plain = model.plain
    with caplog.at_level(logging.WARNING, logger="ghn_init"):
        graph = ghn_init.trace(model, (3, 8, 8))
    assert graph.tracer == "autograd-forward"
    assert any("falling back to one real forward pass" in r.getMessage() for r in caplog.records)
    _assert_unchanged(model, snap)
    assert model.plain is plain and model.plain.item() == 0


def test_strict_error_after_real_forward_leaves_buffers_alone():
    class WithExtra(_Counter):
        def __init__(self):
            super().__init__()
            self.gain = nn.Parameter(torch.ones(4))  # no GHN node: strict fails

        def forward(self, x):
            return super().forward(x) * self.gain.view(1, -1, 1, 1)

    model = WithExtra()
    snap = _snapshot(model)
    with pytest.raises(ghn_init.StrictError):
        ghn_init.apply(model, tiny_ghn("ghn3"), strict=True, input_size=(3, 8, 8))
    _assert_unchanged(model, snap)


@pytest.mark.parametrize("train", [True, False])
def test_spectral_norm_state_is_unchanged(train):
    for make in (torch.nn.utils.spectral_norm, torch.nn.utils.parametrizations.spectral_norm):
        model = nn.Sequential(make(nn.Conv2d(3, 4, 3)), nn.Flatten(), make(nn.Linear(4 * 6 * 6, 5)))
        model.train(train)
        model(torch.randn(2, 3, 8, 8))  # the hook-based version sets .weight on its first call
        snap = _snapshot(model)
        attrs = [dict(m.__dict__) for m in model.modules()]
        for meta in (True, False):
            record(model, (3, 8, 8), meta=meta)
            _assert_unchanged(model, snap)
            for m, before in zip(model.modules(), attrs, strict=True):
                assert m.__dict__.keys() == before.keys()
                assert all(m.__dict__[k] is v for k, v in before.items()), type(m).__name__
        assert model.training is train


class _Caching(nn.Module):
    """Caches a tensor derived from its input on an attribute, like torchvision's AnchorGenerator."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.cache = {}
        self.anchors = [torch.zeros(2)]

    def forward(self, x):
        self.cache[tuple(x.shape)] = x.new_zeros(1)
        self.anchors = [a.to(x.device) for a in self.anchors]
        self.last = x
        return self.conv(x)


def test_attributes_set_during_recording_are_restored():
    # issue 9.4: a meta attempt left meta tensors cached inside the model (AnchorGenerator)
    model = _Caching()
    anchors, cache = model.anchors, model.cache
    ghn_init.trace(model, (3, 8, 8))
    assert model.cache is cache and cache == {}
    assert model.anchors is anchors and not anchors[0].is_meta
    assert not hasattr(model, "last")
    out = model(torch.randn(1, 3, 8, 8))
    assert out.shape == (1, 4, 8, 8)


def test_trace_works_inside_inference_mode():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    with torch.no_grad():
        expected = ghn_init.trace(model, (3, 8, 8))
    with torch.inference_mode():
        graph = ghn_init.trace(model, (3, 8, 8))
        report = ghn_init.apply(model, tiny_ghn("ghn3"), input_size=(3, 8, 8))
    assert [n.name for n in graph.nodes] == [n.name for n in expected.nodes] and graph.edges == expected.edges
    assert report.fraction_predicted == 1.0


def test_failed_recording_leaves_model_unchanged():
    class Broken(_Caching):
        def forward(self, x):
            super().forward(x)
            raise RuntimeError("boom")

    model = Broken()
    snap = _snapshot(model)
    with pytest.raises(TraceError, match="boom") as info:
        ghn_init.trace(model, (3, 8, 8))
    assert [a.split(":")[0] for a in info.value.attempts] == ["meta forward", "fx capture", "real forward"]
    _assert_unchanged(model, snap)
    assert model.cache == {} and not hasattr(model, "last")


def test_lazy_modules_get_a_clear_message():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(3))
    with pytest.raises(TraceError, match="run the model once"):
        ghn_init.trace(model, (3, 8, 8))
    assert isinstance(model[2], nn.LazyLinear)
    model(torch.zeros(1, 3, 8, 8))
    assert ghn_init.apply(model, tiny_ghn("ghn3"), input_size=(3, 8, 8)).fraction_predicted == 1.0


def test_recording_notes_which_modules_ran_keeps_forward_signatures_and_leaves_forward_attributes_as_they_were() -> (
    None
):
    """Which modules ran is noted by a ``forward`` wrapper per module (no hooks): code that reads its own forward's
    signature while running (as Hugging Face models do) sees the real one, a module's own instance-level
    ``forward`` (a user's patch) is still called and is back in place afterwards, and no module keeps a wrapper."""
    import inspect

    class Inspecting(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.patched = nn.Conv2d(4, 4, 1)
            self.unused = nn.Linear(2, 2)

        def forward(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
            assert list(inspect.signature(self.forward).parameters) == ["x", "scale"]
            return self.patched(self.conv(x)) * scale

    model = Inspecting()
    calls = []
    original = model.patched.forward

    def patch(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape)
        return original(x)

    model.patched.forward = patch
    before = {name: dict(m.__dict__) for name, m in model.named_modules()}
    graph = ghn_init.trace(model, (3, 8, 8), tracer="autograd")
    assert calls  # the user's patch ran
    assert {"conv.weight", "patched.weight"} <= graph.executed and "unused.weight" not in graph.executed
    for name, m in model.named_modules():
        assert m.__dict__.keys() == before[name].keys(), name
        assert all(m.__dict__[k] is v for k, v in before[name].items()), name
    assert model.patched.forward is patch and "forward" not in model.conv.__dict__
