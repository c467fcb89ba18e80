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
    named = {**dict(model.named_parameters(remove_duplicate=False)), **dict(model.named_buffers(remove_duplicate=False))}
    return named


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
    return nn.Sequential(nn.Conv2d(3, 8, 3), block, nn.ReLU(), block, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


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
