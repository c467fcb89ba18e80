"""The torch.fx tracer (graph/fx_trace.py) gives the autograd recorder's graph, node for node and edge for edge."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import ghn_init
from ghn_init.errors import TraceError
from ghn_init.graph.autograd_trace import record
from ghn_init.graph.fx_trace import FxCaptureError, record_fx
from ghn_init.graph.program import program_module

from .conftest import assert_unchanged, fixtures_dir, snapshot
from .test_fixtures import MODELS, build, graphs_agree, input_size


def assert_same_graph(model: nn.Module, size: tuple[int, ...]) -> ghn_init.Graph:
    """fx and autograd-on-meta give the same GHN graph (names, types, shapes, modules, edges)."""
    by_fx = ghn_init.trace(model, size, tracer="fx")
    by_autograd = ghn_init.trace(model, size, tracer="autograd")
    assert by_fx.tracer == "fx" and by_autograd.tracer.startswith("autograd")
    assert by_fx.to_dict() == by_autograd.to_dict()
    return by_fx


# One model per mechanism runs by default (in-place ops on views, attention, SE blocks, odd pooling,
# the published builder's ViT/SqueezeNet/Swin special cases); every fixture model with ``-m slow``.
QUICK = {
    "resnet18",
    "squeezenet1_0",
    "inception_v3",
    "swin_v2_t",
    "vit_b_16",
    "mobilenet_v3_small",
    "timm/ghostnet_100",
    "timm/convnext_tiny",
    "timm/pvt_v2_b0",
    "timm/dla34",
}
FIXTURE_CASES = [name if name in QUICK else pytest.param(name, marks=pytest.mark.slow) for name in MODELS]


@pytest.mark.fixtures
@pytest.mark.parametrize("name", FIXTURE_CASES)
def test_fx_graph_matches_autograd_and_reference(name: str) -> None:
    ref_path = fixtures_dir() / "graphs" / (name.replace("/", "__") + ".json")
    model = build(name).eval()
    graph = assert_same_graph(model, input_size(name))
    assert graphs_agree(graph.to_dict(), json.loads(ref_path.read_text())) == []


# ---- tiny models, always run -------------------------------------------------------------------


class SEBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.se_reduce = nn.Conv2d(8, 2, 1)
        self.se_expand = nn.Conv2d(2, 8, 1)
        self.dw = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(x)), inplace=True)
        s = torch.sigmoid(self.se_expand(F.relu(self.se_reduce(x.mean((2, 3), keepdim=True)))))
        x = x * s
        y = F.max_pool2d(self.dw(x), 2)
        y = torch.cat([y, F.avg_pool2d(x, 2)], 1)
        return self.fc(F.adaptive_avg_pool2d(y, 1).flatten(1))


class Attention(nn.Module):
    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.mha = nn.MultiheadAttention(dim, 2, batch_first=True)
        self.head = nn.Linear(dim, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)
        q, k, v = self.qkv(self.norm(x)).chunk(3, dim=-1)
        x = x + F.scaled_dot_product_attention(q, k, v)
        x = x + self.mha(x, x, x, need_weights=False)[0]
        x = x + torch.softmax(x @ x.transpose(1, 2), -1) @ x
        return self.head(x.mean(1))


class KeywordAttention(nn.Module):
    """Fused attention called with query=, key=, value= and attn_mask= by keyword, or the same by position."""

    def __init__(self, by_keyword: bool = True, dim: int = 16) -> None:
        super().__init__()
        self.by_keyword = by_keyword
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.head = nn.Linear(dim, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        mask = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool, device=x.device).tril()
        if self.by_keyword:
            x = F.scaled_dot_product_attention(query=q, key=k, value=v, attn_mask=mask)
        else:
            x = F.scaled_dot_product_attention(q, k, v, mask)
        return self.head(x.mean(1))


class InPlaceOnViews(nn.Module):
    """Autograd rewrites history here (CopySlices, regenerated views); fx shows plain in-place calls."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.short = nn.Conv2d(3, 4, 1)
        self.bias = nn.Parameter(torch.zeros(12))
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        early = y[:, 4:]  # a view made before its base changes
        head = y[:, :4]
        head += self.short(x)  # in place on a view (ghostnet)
        b = self.bias.clone()
        b[4:8].zero_()  # in place on a view of a clone of a parameter (swin v2)
        y = y + b[:8].view(1, 8, 1, 1) + early.sum(1, keepdim=True)
        return self.fc(y.relu_().mean((2, 3)))


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.out = nn.Linear(8, 10, bias=False)
        self.out.weight = self.embed.weight
        self.conv = nn.Conv2d(3, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.conv(x).mean((2, 3)))


class NoGradInside(nn.Module):
    """Part of the forward runs under torch.no_grad(): autograd records none of it."""

    def __init__(self) -> None:
        super().__init__()
        self.frozen = nn.Conv2d(3, 4, 3, padding=1)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            y = self.frozen(x)
            y.relu_()
        return self.fc((self.conv(x) + y).mean((2, 3)))


class DtypeCasts(nn.Module):
    """A cast to an integer type ends the gradient; a float64 round trip does not."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.fc((y.to(torch.float64).float() + y.to(torch.int64).float()).mean((2, 3)))


@pytest.mark.parametrize("cls", [SEBlock, Attention, InPlaceOnViews, Tied, NoGradInside, DtypeCasts])
def test_tiny_models_agree(cls) -> None:
    torch.manual_seed(0)
    graph = assert_same_graph(cls(), (3, 16, 16))
    assert len(graph) > 3
    if cls is NoGradInside:
        assert "frozen.weight" not in {n.name for n in graph.nodes}


def test_attention_called_by_keyword_is_recorded_like_by_position() -> None:
    """query=, key=, value= by keyword broke the meta and fx recordings (the stand-ins unpacked the first three
    positional arguments): tracing fell back to a real forward pass, or failed with tracer="fx"."""
    by_keyword = assert_same_graph(KeywordAttention(by_keyword=True), (3, 16, 16))
    assert ghn_init.trace(KeywordAttention(by_keyword=True), (3, 16, 16), tracer="autograd").tracer == "autograd-meta"
    assert by_keyword.to_dict() == ghn_init.trace(KeywordAttention(by_keyword=False), (3, 16, 16)).to_dict()


def test_tiny_models_agree_on_the_raw_autograd_graph() -> None:
    """Before the reduction rules: same node names in the same depth-first order, same edges."""
    models = (SEBlock(), InPlaceOnViews(), NoGradInside(), DtypeCasts(), torchvision.models.mobilenet_v3_small().eval())
    for model in models:
        a, b = record(model, (3, 32, 32)), record_fx(model, (3, 32, 32))
        assert [(n.name, n.size, n.kernel_size) for n in a.nodes] == [(n.name, n.size, n.kernel_size) for n in b.nodes]
        assert a.edges == b.edges


def test_recording_leaves_the_model_unchanged() -> None:
    model = SEBlock().train()
    before = snapshot(model)
    ghn_init.trace(model, (3, 16, 16), tracer="fx")
    assert model.training and all(m.training for m in model.modules())
    assert_unchanged(model, before)


def test_graph_module_input() -> None:
    gm = torch.fx.symbolic_trace(SEBlock())
    assert_same_graph(gm, (3, 16, 16))


class CpuConstant(nn.Module):
    """Mixes a CPU tensor made in forward with the input: fails on meta tensors, not on fake ones."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = torch.ones(1, 4, 1, 1, device="cpu") * 2  # no device= from x
        return self.fc((self.conv(x) * scale).mean((2, 3)))


def test_auto_uses_fx_when_meta_recording_fails() -> None:
    graph = ghn_init.trace(CpuConstant(), (3, 8, 8))
    assert graph.tracer == "fx"
    assert any("meta forward" in note for note in graph.notes)
    assert graph.to_dict() == ghn_init.trace(CpuConstant(), (3, 8, 8), tracer="autograd").to_dict()


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y.relu() if y.sum().item() > 0 else y  # data-dependent control flow


def test_data_dependent_model_fx_fails_clearly_and_auto_falls_back() -> None:
    with pytest.raises(FxCaptureError):
        record_fx(DataDependent(), (3, 8, 8))
    with pytest.raises(TraceError, match="fx capture"):
        ghn_init.trace(DataDependent(), (3, 8, 8), tracer="fx")
    assert ghn_init.trace(DataDependent(), (3, 8, 8)).tracer == "autograd-forward"


def test_unknown_tracer_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown tracer 'jit'"):
        ghn_init.trace(SEBlock(), (3, 16, 16), tracer="jit")


def test_apply_with_fx(ghn3) -> None:
    model = SEBlock()
    report = ghn_init.apply(model, ghn3, input_size=(3, 16, 16), tracer="fx")
    assert report.tracer == "fx"
    reference = ghn_init.predict(SEBlock(), ghn3, input_size=(3, 16, 16), tracer="autograd")
    assert sorted(report.predicted) == sorted(reference.report.predicted)


def test_exported_program_trace_predict_and_write(ghn3) -> None:
    torch.manual_seed(0)
    model = SEBlock().eval()
    ep = torch.export.export(model, (torch.randn(2, 3, 16, 16),))
    graph = ghn_init.trace(ep)
    assert graph.tracer == "fx"
    assert graph.to_dict() == ghn_init.trace(model, (3, 16, 16)).to_dict()
    shell = program_module(ep)
    assert type(shell.dw) is nn.Conv2d and shell.dw.groups == 8 and shell.dw.dilation == (2, 2)
    prediction = ghn_init.predict(ep, ghn3)
    assert prediction.model is shell
    expected = ghn_init.predict(model, ghn3, input_size=(3, 16, 16)).tensors
    assert sorted(prediction.tensors) == sorted(expected)
    prediction.write()
    for name, (_, value) in expected.items():
        assert torch.allclose(ep.state_dict[name], value.to(ep.state_dict[name].dtype), atol=1e-6), name
    out = ep.module()(torch.randn(2, 3, 16, 16))  # the program runs with the written tensors
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="ExportedProgram"):
        ghn_init.trace(ep, tracer="autograd")


@pytest.mark.parametrize("cls", [Attention, InPlaceOnViews, Tied, NoGradInside])
def test_exported_program_graph_matches_module(cls) -> None:
    """Layers whose forward is not called (MHA's out_proj) get their class from how the weight is used."""
    torch.manual_seed(0)
    model = cls().eval()
    ep = torch.export.export(model, (torch.randn(2, 3, 16, 16),))
    assert ghn_init.trace(ep).to_dict() == ghn_init.trace(model, (3, 16, 16)).to_dict()


def test_cli_tracer_flag(capsys: pytest.CaptureFixture) -> None:
    from ghn_init import cli

    assert cli.main(["trace", "timm/resnet10t", "--input-size", "3", "64", "64", "--tracer", "fx"]) == 0
    assert "tracer: fx" in capsys.readouterr().out
    assert cli.main(["trace", "timm/resnet10t", "--tracer", "jit"]) == 2  # argparse: invalid choice


class CachesInForward(nn.Module):
    """Its forward stores a tensor and a counter on itself (like torchvision's AnchorGenerator cache)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.calls = 0
        self.plain = torch.zeros(1)  # a plain tensor attribute, written in place

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.plain += 1
        self.cached = self.conv(x)
        return self.cached.mean((2, 3))


def test_fx_capture_leaves_no_state_behind() -> None:
    model = CachesInForward()
    ghn_init.trace(model, (3, 8, 8), tracer="fx")
    assert model.calls == 0 and not hasattr(model, "cached") and model.plain.item() == 0
    assert not model.conv._forward_pre_hooks  # the hooks that note which modules ran are gone
    assert model(torch.randn(1, 3, 8, 8)).shape == (1, 4)  # real tensors, not fake ones


class TwoImages(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3)
        self.b = nn.Conv2d(3, 4, 3)

    def forward(self, image1: torch.Tensor, image2: torch.Tensor, *, scale: float = 1.0) -> torch.Tensor:
        return (self.a(image1) * scale + self.b(image2)).mean((2, 3))


def test_fx_example_inputs_and_kwargs() -> None:
    model = TwoImages()
    inputs = (torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8))
    by_fx = ghn_init.trace(model, example_inputs=inputs, example_kwargs={"scale": 2.0}, tracer="fx")
    by_autograd = ghn_init.trace(model, example_inputs=inputs, example_kwargs={"scale": 2.0}, tracer="autograd")
    assert by_fx.to_dict() == by_autograd.to_dict() and by_fx.tracer == "fx"
    assert by_fx.executed == by_autograd.executed
