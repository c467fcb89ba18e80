"""The fast paths of apply give what the slow ones gave: meta stand-ins, tiling, the cropped decoder.

Each fast path replaced a slower computation with one that must leave exactly the same graph or
values behind; these tests compare the two on cases chosen to hit every branch.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

import ghn_init
import ghn_init.graph.autograd_trace as autograd_trace
import ghn_init.networks.ghn as ghn_module
from ghn_init.graph.autograd_trace import record
from ghn_init.graph.meta_ops import STAND_IN_FUNCTIONS, meta_stand_in
from ghn_init.networks.decoders import Request, WeightDecoder
from ghn_init.tiling import SMALL, tile

from .conftest import tiny_ghn

# ------------------------------------------------------------------------------- meta stand-ins


class _Acts(nn.Module):
    """Every stand-in once: activations in and out of place, on views, linear in all its forms, roll."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, stride=2, padding=2, dilation=2, groups=8, bias=False, padding_mode="reflect")
        self.same = nn.Conv2d(8, 8, (3, 1), padding="same")
        self.se1, self.se2 = nn.Conv2d(8, 4, 1), nn.Conv2d(4, 8, 1)
        self.lin = nn.Linear(8, 8)
        self.lin_nobias = nn.Linear(8, 8, bias=False)
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.hardswish(self.conv(x), inplace=True)
        x = self.same(self.dw(x))
        x = x + F.adaptive_avg_pool2d(x, (3, 3)).sum() + nn.AdaptiveAvgPool2d((1, None))(x)
        s = F.hardsigmoid(self.se2(F.relu(self.se1(x.mean((2, 3), keepdim=True)))))
        x = x * s
        x = F.relu6(x, inplace=True)[:, :, 1:]  # in-place, then a view
        F.relu(x[:, :4], inplace=True)  # in-place on a view: the base's history changes
        x = F.hardtanh(x, -2.0, 2.0) + F.leaky_relu(x, 0.1) + F.elu(x) + F.mish(x)
        x = torch.roll(x, shifts=(1, 1), dims=(2, 3))
        x = x.contiguous() * 0.5 + 1  # with Python numbers
        x += x.mean(1, keepdim=True)  # in place, broadcast
        t = x.permute(0, 2, 3, 1)  # non-contiguous 4-D input: matmul + in-place bias add
        t = F.gelu(self.lin(t)) + self.lin_nobias(t)
        t = self.lin(t.contiguous())  # contiguous 4-D input: flattening view + addmm + view
        v = self.lin(t.flatten(1, 2))  # contiguous 3-D input
        return self.head(v.mean(1))  # 2-D input: addmm


class _Elementwise(nn.Module):
    """Elementwise ops in every layout the stand-ins meet: channels-last and size-1 dims (strides copied by
    ``empty_like``), broadcasting both ways, sigmoid/tanh/silu as functions and methods, in place."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        cl = x.contiguous(memory_format=torch.channels_last)  # not contiguous: the real empty_like runs
        y = F.silu(cl) + torch.sigmoid(x) * x.tanh()
        g = self.pool(x.mean((2, 3), keepdim=True))  # (2, 4, 1, 1): contiguous in either memory format
        g = self.bn(g.contiguous(memory_format=torch.channels_last)).sigmoid()
        y = y * g + torch.tanh(g) * 2.0
        y = F.silu(y.contiguous(), inplace=True) + g.expand_as(y).contiguous()
        y = torch.cat([y, x, y], 1)[:, 2:6] + torch.cat((cl, cl), dim=-1)[..., :6]  # contiguous, channels-last
        y = torch.cat([y, torch.cat([cl, x.detach()], 1)], 1)  # mixed formats; an input without grad
        return (y[:, :4] + F.silu(x[:, :, :1])).flatten(1)


def _raw(model: nn.Module, size: tuple[int, ...], monkeypatch: pytest.MonkeyPatch, stand_ins: bool):
    with monkeypatch.context() as m:
        if not stand_ins:
            m.setattr(autograd_trace, "meta_stand_in", lambda func, args, kwargs: None)
        raw = record(model, size, meta=True)
    nodes = [(n.name, n.size, n.kernel_size, n.is_param, id(n.module)) for n in raw.nodes]
    return nodes, sorted(raw.edges)


@pytest.mark.parametrize(
    "name",
    [
        "acts",
        "mobilenet_v3_small",
        "tiny_vit",
        "tiny_swin",
        "tiny_convnext",
        "tiny_efficientnet",
        "tiny_densenet",
        "elementwise",
    ],
)
def test_stand_ins_leave_the_same_autograd_graph(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    size = (3, 32, 32)
    if name == "acts":
        model: nn.Module = _Acts()
        size = (3, 12, 12)
    elif name == "mobilenet_v3_small":
        model = torchvision.models.mobilenet_v3_small()
    elif name == "tiny_vit":
        model = torchvision.models.VisionTransformer(32, 16, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32)
    elif name == "tiny_swin":
        model = torchvision.models.swin_transformer.SwinTransformer(
            patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=[2, 2]
        )
    elif name == "tiny_efficientnet":  # SiLU everywhere, sigmoid gates, in-place residual adds
        from torchvision.models.efficientnet import EfficientNet, MBConvConfig

        model = EfficientNet([MBConvConfig(1, 3, 1, 8, 8, 1), MBConvConfig(4, 3, 2, 8, 16, 2)], dropout=0.0)
    elif name == "tiny_densenet":  # a cat per layer
        model = torchvision.models.DenseNet(growth_rate=4, block_config=(2, 2), num_init_features=8, bn_size=2)
    elif name == "elementwise":
        model = _Elementwise()
        size = (3, 6, 6)
    else:
        from torchvision.models.convnext import CNBlockConfig, ConvNeXt

        model = ConvNeXt([CNBlockConfig(16, 32, 1), CNBlockConfig(32, None, 1)])
    fast = _raw(model, size, monkeypatch, stand_ins=True)
    slow = _raw(model, size, monkeypatch, stand_ins=False)
    assert len(fast[0]) > 5
    assert fast == slow


def test_stand_in_names_match_pytorch() -> None:
    x = torch.empty(2, 4, device="meta", requires_grad=True).clone()
    w = torch.empty(3, 4, device="meta", requires_grad=True)
    b = torch.empty(3, device="meta", requires_grad=True)
    x4 = torch.empty(2, 4, 9, 7, device="meta", requires_grad=True).clone()
    w4 = torch.empty(6, 2, 3, 3, device="meta", requires_grad=True)
    cases = [
        (F.hardswish, (x,), {}),
        (F.hardsigmoid, (x.clone(),), {"inplace": True}),
        (F.relu6, (x,), {}),
        (F.silu, (x,), {}),
        (F.silu, (x.clone(),), {"inplace": True}),
        (torch.sigmoid, (x,), {}),
        (torch.Tensor.sigmoid, (x,), {}),
        (torch.tanh, (x,), {}),
        (torch.Tensor.tanh, (x,), {}),
        (F.gelu, (x,), {"approximate": "tanh"}),
        (torch.roll, (x, 1, 0), {}),
        (F.linear, (x, w, b), {}),
        (torch.add, (x, b[:1]), {"alpha": 2}),
        (torch.Tensor.mul, (x, 3), {}),
        (torch.Tensor.add_, (x.clone(), b[:1]), {}),
        (torch.Tensor.mul_, (x.detach().clone(), x), {}),
        (torch.cat, ([x, x.detach(), x],), {}),
        (torch.cat, ([x4, x4.contiguous(memory_format=torch.channels_last)], 1), {}),
        (torch.cat, ((x4.contiguous(memory_format=torch.channels_last),) * 2,), {"dim": -1}),
        (F.adaptive_avg_pool2d, (x4, 1), {}),
        (F.adaptive_avg_pool2d, (x4, (3, None)), {}),
        (F.conv2d, (x4, w4, None, 2, 1, 1, 2), {}),
        (F.conv2d, (x4, w4), {"padding": "same", "dilation": 2, "groups": 2}),
        (F.conv2d, (x4, w4[:4], b[:1].expand(4).contiguous()), {"stride": (2, 1), "padding": "valid", "groups": 2}),
    ]
    for func, args, kwargs in cases:
        assert func in STAND_IN_FUNCTIONS, func  # the recording mode sends it to meta_stand_in
        fast = meta_stand_in(func, args, kwargs)
        real = func(*args, **kwargs)
        assert fast is not None, func
        assert type(fast.grad_fn).__name__ == type(real.grad_fn).__name__
        assert fast.shape == real.shape and fast.stride() == real.stride()


def test_empty_like_equals_pytorch() -> None:
    """Random shapes (many size-1 dims), permutations, slices, expansions and scrambled size-1 strides: the
    stand-ins' ``empty_like`` gives PyTorch's strides (a contiguous tensor with an odd stride on a size-1 dim
    gets the standard one; channels-last ties go PyTorch's way)."""
    import random

    from ghn_init.graph.meta_ops import _contiguous_strides, empty_like

    rng = random.Random(0)
    fast_paths = 0
    for _ in range(3000):
        shape = [rng.choice([0, 1, 1, 2, 3, 4]) for _ in range(rng.randint(0, 5))]
        t = torch.empty(shape, device="meta")
        if len(shape) == 4 and rng.random() < 0.3:
            t = t.contiguous(memory_format=torch.channels_last)
        perm = list(range(t.dim()))
        rng.shuffle(perm)
        t = t.permute(perm)
        if rng.random() < 0.3:  # odd strides on size-1 dims
            t = t.as_strided(
                t.shape, [rng.choice([1, 7, 100]) if d == 1 else s for d, s in zip(t.shape, t.stride(), strict=True)]
            )
        if t.dim() and t.shape[-1] > 2 and rng.random() < 0.2:
            t = t[..., ::2]  # gaps
        for u in (t, t.half()):
            fast, real = empty_like(u), torch.empty_like(u)
            assert (fast.shape, fast.stride(), fast.dtype, fast.device) == (
                real.shape,
                real.stride(),
                real.dtype,
                real.device,
            ), (u.shape, u.stride())
        fast_paths += _contiguous_strides(t.shape) == t.stride()
    assert fast_paths > 500
    cpu = torch.empty(2, 3).t()
    assert empty_like(cpu).stride() == torch.empty_like(cpu).stride() and empty_like(cpu).device == cpu.device


def test_binary_and_pooling_stand_ins_lay_out_outputs_as_pytorch() -> None:
    """Random shapes with many size-1 dims, some with odd strides there (still ``is_contiguous()``): the
    stand-ins of add/mul (broadcast both ways) and adaptive pooling give PyTorch's output strides, or leave the
    call to PyTorch. Before, a contiguous operand with an odd size-1 stride got a stand-in with other strides."""
    import random

    rng = random.Random(0)
    compared = 0

    def odd(t: torch.Tensor) -> torch.Tensor:
        if rng.random() < 0.5:
            return t
        return t.as_strided(
            t.shape, [rng.choice([1, 5]) if d == 1 else s for d, s in zip(t.shape, t.stride(), strict=True)]
        )

    for _ in range(1500):
        shape = [rng.choice([1, 1, 2, 3]) for _ in range(rng.randint(1, 4))]
        a = odd(torch.empty(shape, device="meta", requires_grad=True).clone())
        other = [d if rng.random() < 0.6 else 1 for d in shape][rng.randint(0, len(shape) - 1) :]
        b = odd(torch.empty(other, device="meta"))
        for func in (torch.add, torch.mul):
            for x, y in ((a, b), (b, a), (a, 2.0)):
                fast = meta_stand_in(func, (x, y), {})
                if fast is not None:
                    real = func(x, y)
                    assert (fast.shape, fast.stride()) == (real.shape, real.stride()), (x.stride(), y)
                    compared += 1
        x4 = odd(torch.empty(2, *[rng.choice([1, 2, 5]) for _ in range(3)], device="meta", requires_grad=True).clone())
        for size in (1, (2, 2), (None, 1)):
            fast = meta_stand_in(F.adaptive_avg_pool2d, (x4, size), {})
            if fast is not None:
                real = F.adaptive_avg_pool2d(x4, size)
                assert (fast.shape, fast.stride()) == (real.shape, real.stride()), (x4.shape, x4.stride(), size)
                compared += 1
    assert compared > 3000


def test_binary_stand_ins_of_permuted_sliced_and_broadcast_operands_lay_out_outputs_as_pytorch() -> None:
    """add/mul of non-contiguous meta tensors (permuted, channels-last, sliced with gaps, odd size-1 strides,
    broadcast both ways, 0-dim), out of place and in place, with autograd on as in a recording: each stand-in
    has PyTorch's node name, shape and strides. Before, these went to PyTorch's Python reference (140 us a
    call: ConvNeXt's ``layer_scale * x``)."""
    import random

    from ghn_init.graph.elementwise_layout import expanded_strides

    rng = random.Random(3)

    def operand(shape: list[int]) -> torch.Tensor:
        t = torch.empty(shape, device="meta")
        if len(shape) == 4 and rng.random() < 0.3:
            t = t.contiguous(memory_format=torch.channels_last)
        perm = list(range(t.dim()))
        rng.shuffle(perm)
        if rng.random() < 0.5:  # dense in another order
            t = t.permute(perm).contiguous().permute([perm.index(i) for i in range(t.dim())])
        if rng.random() < 0.3:
            t = t.permute(perm)
        if rng.random() < 0.2:
            t = t.as_strided(
                t.shape, [rng.choice([1, 5]) if d == 1 else s for d, s in zip(t.shape, t.stride(), strict=True)]
            )
        if t.dim() and t.shape[-1] > 2 and rng.random() < 0.15:
            t = t[..., ::2]  # gaps
        return t

    stood_in = compared = 0
    for _ in range(2500):
        a = operand([rng.choice([1, 1, 2, 3, 4]) for _ in range(rng.randint(0, 5))]).requires_grad_()
        suffix = [d if rng.random() < 0.6 else 1 for d in a.shape][rng.randint(0, max(a.dim() - 1, 0)) :]
        b = operand(suffix)
        for func in (torch.add, torch.mul, torch.Tensor.mul):
            for x, y in ((a, b), (b, a), (a, 2.0), (a, a)):
                fast = meta_stand_in(func, (x, y), {})
                try:
                    real = func(x, y)
                except RuntimeError:  # a slice made the shapes incompatible: PyTorch raises its own error
                    assert fast is None
                    continue
                compared += 1
                if fast is not None:
                    stood_in += 1
                    assert type(fast.grad_fn).__name__ == type(real.grad_fn).__name__
                    assert (fast.shape, fast.stride(), fast.dtype) == (real.shape, real.stride(), real.dtype), [
                        (t.shape, t.stride()) for t in (x, y) if isinstance(t, torch.Tensor)
                    ]
        state = rng.getstate()
        dst = operand(list(a.shape))  # two alike targets, views where ``operand`` made a view
        rng.setstate(state)
        twin = operand(list(a.shape))
        for func in (torch.Tensor.add_, torch.Tensor.mul_) if dst.shape == a.shape else ():
            fast = meta_stand_in(func, (dst, a), {})
            real = func(twin, a)
            if fast is not None:
                stood_in += 1
                assert fast is dst and type(fast.grad_fn).__name__ == type(real.grad_fn).__name__
                assert fast.stride() == real.stride()
    assert compared > 25000 and stood_in > 0.9 * compared
    # the ConvNeXt case: a (C, 1, 1) scale times a channels-last-dense (N, C, H, W) tensor keeps its layout
    x = torch.empty(2, 14, 14, 384, device="meta", requires_grad=True).permute(0, 3, 1, 2)
    s = torch.empty(384, 1, 1, device="meta", requires_grad=True)
    assert meta_stand_in(torch.Tensor.mul, (s, x), {}).stride() == (s * x).stride() == (75264, 1, 5376, 384)
    assert expanded_strides((384, 1, 1), (1, 1, 1), (2, 384, 14, 14)) == (0, 1, 0, 0)


def test_channels_last_stride_test_equals_pytorch() -> None:
    import itertools

    from torch._prims_common import are_strides_like_channels_last_or_false as pytorch_test

    from ghn_init.graph.meta_ops import _strides_like_channels_last

    checked = 0
    for shape in [
        (2, 3, 4, 5),
        (2, 1, 4, 5),
        (2, 3, 1, 1),
        (1, 1, 1, 1),
        (2, 3, 0, 5),
        (2, 3, 4, 5, 6),
        (2, 1, 1, 1, 1),
    ]:
        base = torch.empty(shape)
        for perm in itertools.permutations(range(len(shape))):
            t = base.permute(perm).contiguous().permute([perm.index(i) for i in range(len(shape))])
            for u in (t, t[:, :1], t.transpose(0, 1), t.expand(3, *shape[1:]) if shape[0] == 1 else t):
                assert _strides_like_channels_last(u.shape, u.stride()) == pytorch_test(u.shape, u.stride())
                checked += 1
    assert checked > 1000


def test_broadcast_shape_equals_pytorch() -> None:
    from ghn_init.graph.meta_ops import broadcast_shape

    cases = [
        ((2, 3), (3,)),
        ((2, 1, 4), (5, 1)),
        ((), (2,)),
        ((0,), (1,)),
        ((1, 0), (3, 1)),
        ((2, 8, 1, 1), (2, 8, 4, 4)),
    ]
    for a, b in cases:
        assert broadcast_shape(torch.Size(a), torch.Size(b)) == tuple(torch.broadcast_shapes(a, b))
    for a, b in [((2, 3), (4,)), ((0,), (2,))]:
        with pytest.raises(RuntimeError):
            torch.broadcast_shapes(a, b)
        assert broadcast_shape(torch.Size(a), torch.Size(b)) is None


def test_stand_ins_only_on_meta_tensors_with_grad() -> None:
    cpu = torch.zeros(2, 3, requires_grad=True)
    meta = torch.empty(2, 3, device="meta", requires_grad=True)
    assert meta_stand_in(F.hardswish, (cpu,), {}) is None  # real tensors compute for real
    assert meta_stand_in(F.linear, (meta, torch.empty(4, 3, device="meta")), {}) is None  # no bias: matmul
    assert meta_stand_in(torch.sub, (meta, meta), {}) is None  # not a stand-in op
    assert meta_stand_in(torch.cat, ([meta, meta[:, :2]],), {}) is None  # sizes differ off dim: PyTorch raises
    assert meta_stand_in(torch.cat, ([meta, meta.double()],), {}) is None  # dtypes promote: PyTorch's rule
    assert meta_stand_in(torch.cat, ([meta.detach()],), {}) is None  # nothing requires grad
    out = torch.empty(2, 3, device="meta")
    assert meta_stand_in(torch.sigmoid, (meta,), {"out": out}) is None  # out= runs for real
    # non-contiguous operands: PyTorch's layout; with a dtype conversion or an alpha, PyTorch decides it
    assert meta_stand_in(torch.add, (meta.t(), meta.t()), {}).stride() == torch.add(meta.t(), meta.t()).stride()
    assert meta_stand_in(torch.add, (meta.t(), meta.t().double()), {}) is None
    assert meta_stand_in(torch.add, (meta.t(), meta.t()), {"alpha": 2}) is None
    assert meta_stand_in(torch.add, (meta.detach(), 1), {}) is None  # nothing requires grad
    with torch.no_grad():
        assert meta_stand_in(F.hardswish, (meta,), {}) is None  # nothing would be recorded


# ------------------------------------------------------------------------------- tiling


@pytest.mark.parametrize(
    "shape, sizes",
    [
        ((2, 3), (3, 5)),
        ((64, 64, 3, 3), (512, 200)),
        ((64, 3, 7, 7), (64, 3)),  # nothing to tile: the tensor itself comes back
        ((5,), (13,)),
        ((5,), (40_000,)),
        ((1, 3, 4), (1, 3, 10)),
        ((4, 64, 1, 1), (3024, 64)),
        ((7, 5), (7, 5)),
    ],
)
def test_tile_equals_repeat_then_crop(shape: tuple[int, ...], sizes: tuple[int, ...]) -> None:
    w = torch.randn(shape)
    padded = list(sizes) + [1] * (len(shape) - len(sizes))
    reps = [math.ceil(s / d) if s > d else 1 for s, d in zip(padded, shape, strict=True)]
    crop = tuple(slice(0, s) for s in sizes)
    expected = w.repeat(reps)[crop]
    out = tile(w, sizes)
    assert torch.equal(out, expected)
    if not any(s > d for s, d in zip(sizes, shape, strict=False)):
        assert out is w
    elif out.numel() >= SMALL:  # large results: exactly sized, so the writer takes them without a copy
        assert out.is_contiguous() and out.untyped_storage().nbytes() == out.numel() * out.element_size()


def test_tile_keeps_gradients() -> None:
    w = torch.randn(4, 3, requires_grad=True)
    tile(w, (9, 7)).sum().backward()
    expected = torch.zeros(4, 3)
    for i in range(9):
        for j in range(7):
            expected[i % 4, j % 3] += 1
    assert torch.equal(w.grad, expected)


# ------------------------------------------------------------------------------- cropped decoder


def _full_decode(dec: WeightDecoder, x: torch.Tensor, shape: tuple[int, ...], classifier: bool) -> torch.Tensor:
    """The decoder as the published code runs it: every output channel, cropped afterwards."""
    n = x.shape[0]
    out_ch, in_ch = dec.max_shape[:2]
    y = dec._expand(x, dec._crop(shape[2]), dec._crop(shape[3]))
    h, w = y.shape[2:]
    y = dec.conv(y.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    y = y.reshape(n, out_ch, in_ch, h, w)[:, :, : shape[1], : shape[2], : shape[3]]
    if min(shape[2:]) > min(h, w):
        flat = y.reshape(n * y.shape[1], y.shape[2], h, w)
        y = F.interpolate(flat, size=tuple(shape[2:]), mode="bilinear").view(n, y.shape[1], y.shape[2], *shape[2:])
    if classifier:
        c = y.shape[-1] // 2
        return dec.class_layer_predictor(y[:, :, :, c, c].permute(0, 2, 1)).permute(0, 2, 1)
    return y[:, : shape[0]]


@pytest.mark.parametrize(
    "shape, classifier",
    [
        ((16, 16, 3, 3), False),  # full channels
        ((16, 1, 3, 3), False),  # depthwise: one input channel
        ((16, 3, 5, 5), False),  # stem over 3 colour channels
        ((8, 16, 1, 1), False),  # fewer output channels
        ((4, 2, 7, 7), False),  # kernel larger than the decoder grid: upsampled
        ((10, 16, 1, 1), True),  # classifier: every output channel of the centre pixel
    ],
)
def test_cropped_decoder_matches_full_decoder(shape: tuple[int, ...], classifier: bool) -> None:
    torch.manual_seed(0)
    dec = WeightDecoder(hid=8, max_shape=(16, 16, 5, 5), num_classes=10, centre_crop=True).eval()
    x = torch.randn(3, 8)
    with torch.no_grad():
        fast = dec(x, shape, classifier=classifier)
        full = _full_decode(dec, x, shape, classifier)
    assert fast.shape == full.shape
    torch.testing.assert_close(fast, full, rtol=1e-6, atol=1e-6)


def test_decode_needed_matches_forward_cropped() -> None:
    """Several batches in one call, each node at its own channels: what ``forward`` gives, cropped."""
    torch.manual_seed(0)
    dec = WeightDecoder(hid=8, max_shape=(16, 16, 5, 5), num_classes=10, centre_crop=True).eval()
    cases = [  # (decoded shape, classifier, per-node (out, in) needs)
        ((16, 16, 3, 3), False, [(16, 16), (12, 16), (16, 5), (3, 2)]),
        ((16, 4, 5, 5), False, [(16, 3)]),  # a stem over 3 colour channels
        ((8, 16, 1, 1), False, [(8, 16), (8, 9)]),
        ((4, 2, 7, 7), False, [(4, 2), (1, 1)]),  # kernel larger than the decoder grid: upsampled
        ((16, 1, 3, 3), False, [(16, 1)]),  # depthwise
        ((10, 16, 1, 1), True, [(16, 16), (16, 7)]),  # classifier: every output channel of the centre pixel
    ]
    requests = [Request(torch.randn(len(needs), 8), shape, cls, needs) for shape, cls, needs in cases]
    with torch.no_grad():
        got = dec.decode_needed(requests)
        for r, decoded in zip(requests, got, strict=True):
            full = dec(r.x, r.shape, classifier=r.classifier)
            assert len(decoded) == len(r.needs)
            for j, (o, i) in enumerate(r.needs):
                want = full[j][:, :i] if r.classifier else full[j][:o, :i]
                assert decoded[j].shape == want.shape
                torch.testing.assert_close(decoded[j], want, rtol=1e-5, atol=1e-6)


def _ghn_test_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    if name == "mobilenet_v3_small":  # depthwise, squeeze-excitation, 3-channel stem, widths above the decoder's
        return torchvision.models.mobilenet_v3_small()
    if name == "tiny_vit":  # token embeddings with a class token, a 16x16 patch kernel (upsampled), attention
        return torchvision.models.VisionTransformer(32, 16, num_layers=1, num_heads=2, hidden_dim=24, mlp_dim=40)
    return nn.Sequential(  # a 7x7 stem, narrow and wide convs, a hidden linear layer, then the classifier
        nn.Conv2d(3, 12, 7, padding=3), nn.BatchNorm2d(12), nn.ReLU(), nn.Conv2d(12, 40, 3, padding=1),
        nn.Conv2d(40, 6, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 30), nn.Linear(30, 10),
    )  # fmt: skip


def _predict(ghn: nn.Module, model: nn.Module, grad: bool) -> tuple[list[str], dict[str, torch.Tensor]]:
    graph = ghn_init.trace(model, (3, 32, 32), virtual_edge_cutoff=ghn.virtual_edge_cutoff)
    plan = ghn_init.plan(graph, model, ghn.config.max_shape)
    order: list[str] = []
    kept: dict[str, torch.Tensor] = {}

    def sink(b: int, name: str, tensor: torch.Tensor) -> None:
        order.append(name)
        kept[name] = tensor.detach().clone()

    torch.manual_seed(1)  # the class token's draw
    with torch.set_grad_enabled(grad):
        ghn([graph], [plan], sink=sink)
    return order, kept


@pytest.mark.parametrize("kind", ["ghn3", "ghn2"])
@pytest.mark.parametrize("name", ["mobilenet_v3_small", "tiny_vit", "mixed"])
def test_inference_decoding_matches_the_straightforward_path(
    kind: str, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inference decodes only the channels each tensor uses, many groups at once; with autograd on, every
    group is decoded whole, then cropped (the published computation). Same tensors, same order, same draw."""
    ghn = tiny_ghn(kind, hid=16, max_shape=(16, 16, 5, 5), num_classes=10)
    model = _ghn_test_model(name)
    monkeypatch.setattr(ghn_module, "_NEEDED_MIN_WEIGHTS", 0)  # the path is for wide GHNs: make this one use it
    calls = {"n": 0}
    decode_needed = ghn.decoder.decode_needed

    def counted(requests):  # the inference path must actually run
        calls["n"] += 1
        return decode_needed(requests)

    monkeypatch.setattr(ghn.decoder, "decode_needed", counted)
    order, fast = _predict(ghn, model, grad=False)
    fast_calls = calls["n"]
    assert fast_calls >= 1
    slow_order, slow = _predict(ghn, model, grad=True)
    assert calls["n"] == fast_calls, "with autograd on, the decoder must run as published"
    assert order == slow_order and len(order) > 5
    for key in order:
        torch.testing.assert_close(fast[key], slow[key], rtol=1e-5, atol=1e-6, msg=key)
    monkeypatch.setattr(ghn_module, "_CHUNK", 1)  # every tensor decoded by its own call
    one_by_one_order, one_by_one = _predict(ghn, model, grad=False)
    assert one_by_one_order == order
    assert calls["n"] - fast_calls > fast_calls
    for key in order:
        torch.testing.assert_close(one_by_one[key], slow[key], rtol=1e-5, atol=1e-6, msg=key)


def test_inference_decodes_needed_channels_only_for_a_wide_weight_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small GHNs decode whole groups (one matmul per group is faster there); from _NEEDED_MIN_WEIGHTS last-layer
    weights on (GHN-3-XL) only the channels each tensor uses are decoded."""
    ghn = tiny_ghn("ghn3", hid=16, max_shape=(16, 16, 5, 5), num_classes=10)
    model = _ghn_test_model("mobilenet_v3_small")
    calls = {"n": 0}
    decode_needed = ghn.decoder.decode_needed

    def counted(requests):
        calls["n"] += 1
        return decode_needed(requests)

    monkeypatch.setattr(ghn.decoder, "decode_needed", counted)
    assert ghn.decoder.last_layer_weights == 16 * 8 * 16 * 16 < ghn_module._NEEDED_MIN_WEIGHTS
    _predict(ghn, model, grad=False)
    assert calls["n"] == 0
    monkeypatch.setattr(ghn_module, "_NEEDED_MIN_WEIGHTS", ghn.decoder.last_layer_weights)
    _predict(ghn, model, grad=False)
    assert calls["n"] >= 1


@pytest.mark.parametrize("kind", ["ghn3", "ghn2"])
def test_group_decoding_computes_only_the_channels_its_tensors_read(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A small GHN decodes each group with one call; in inference that call computes only the channels some
    member reads (9-channel convs grouped at 16 compute 9, a classifier all of them), and every tensor equals
    the published computation (autograd on: the whole group, then cropped)."""
    ghn = tiny_ghn(kind, hid=16, max_shape=(16, 16, 5, 5), num_classes=10)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 9, 3, padding=1), nn.ReLU(),
        nn.Conv2d(9, 9, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(9, 10),
    )  # fmt: skip
    rows: list[tuple[bool, int, int]] = []
    last_layer = ghn.decoder._last_layer

    def counted(out_rows: int, in_cols: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        rows.append((torch.is_grad_enabled(), out_rows, in_cols))
        return last_layer(out_rows, in_cols)

    monkeypatch.setattr(ghn.decoder, "_last_layer", counted)
    order, fast = _predict(ghn, model, grad=False)
    slow_order, slow = _predict(ghn, model, grad=True)
    assert order == slow_order and len(order) >= 8
    for key in order:
        torch.testing.assert_close(fast[key], slow[key], rtol=1e-5, atol=1e-6, msg=key)
    inference = sorted((o, i) for grad, o, i in rows if not grad)
    published = sorted((o, i) for grad, o, i in rows if grad)
    assert (9, 16) in inference and (9, 16) not in published  # the 9-channel convs' group, cut from 16 rows
    assert (16, 16) in published
    assert max(o for o, _ in inference) == 16  # a classifier's head still reads all 16 rows


def test_batched_decoding_shares_one_last_layer_product_per_channel_crop(monkeypatch: pytest.MonkeyPatch) -> None:
    """``forward_batched`` gives what one ``forward`` per group gives (within float32 rounding), with one product
    of the last layer for all groups computing the same channels: the 1x1 and 3x3 groups and the classifier at
    (16, 16) share one, the 9-channel group has its own. Before, each group read the whole last layer again."""
    ghn = tiny_ghn("ghn3", hid=16, max_shape=(16, 16, 5, 5), num_classes=10).eval()
    dec = ghn.decoder
    torch.manual_seed(0)
    calls = [
        (torch.randn(3, 16), (16, 16, 1, 1), False, (16, 16)),
        (torch.randn(2, 16), (16, 16, 3, 3), False, (16, 16)),
        (torch.randn(4, 16), (16, 16, 3, 3), False, (9, 16)),
        (torch.randn(1, 16), (16, 16, 1, 1), True, (16, 16)),
        (torch.randn(2, 16), (16, 16, 7, 7), False, (16, 16)),  # larger than the grid: upsampled
    ]
    products = []
    last_layer = dec._last_layer
    monkeypatch.setattr(dec, "_last_layer", lambda o, i: (products.append((o, i)), last_layer(o, i))[1])
    with torch.no_grad():
        batched = dec.forward_batched(calls)
        assert sorted(products) == [(9, 16), (16, 16)]
        for (x, shape, classifier, channels), got in zip(calls, batched, strict=True):
            torch.testing.assert_close(got, dec(x, shape, classifier, channels), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_finite_check_finds_every_non_finite_value(bad: float) -> None:
    from ghn_init.errors import PredictionError
    from ghn_init.planning import DecoderKind

    w = torch.randn(6, 5, 3, 3)
    ghn_module._check_finite(w, 1, DecoderKind.WEIGHT, (6, 5, 3, 3))  # finite: passes
    ghn_module._check_finite(w[:0], 1, DecoderKind.WEIGHT, (0, 5, 3, 3))  # empty: nothing to check
    huge = torch.full((6, 5, 3, 3), 3e38)
    assert not torch.isfinite(huge.sum())  # finite values whose sum overflows: still finite
    ghn_module._check_finite(huge, 1, DecoderKind.WEIGHT, (6, 5, 3, 3))
    for index in [(0, 0, 0, 0), (5, 4, 2, 2), (3, 1, 1, 2)]:
        w_bad = w.clone()
        w_bad[index] = bad
        with pytest.raises(PredictionError, match="non-finite"):
            ghn_module._check_finite(w_bad, 1, DecoderKind.WEIGHT, (6, 5, 3, 3))


# ------------------------------------------------------------------------------- graph and GHN internals


def _bfs_reference(n: int, edges: list[tuple[int, int]], cutoff: int) -> torch.Tensor:
    succ: list[set[int]] = [set() for _ in range(n)]
    for s, d in edges:
        if s != d:
            succ[s].add(d)
    out = torch.zeros(n, n, dtype=torch.int16)
    for src in range(n):
        frontier, seen = [src], {src}
        for depth in range(1, cutoff + 1):
            frontier = [v for u in frontier for v in sorted(succ[u]) if v not in seen]
            frontier = list(dict.fromkeys(frontier))
            seen.update(frontier)
            for v in frontier:
                out[src, v] = depth
    return out


@pytest.mark.parametrize("seed, n, m, cutoff", [(0, 30, 60, 50), (1, 50, 120, 3), (2, 12, 40, 1), (3, 1, 0, 50)])
def test_distance_matrix_matches_breadth_first_search(seed: int, n: int, m: int, cutoff: int) -> None:
    from ghn_init.graph.graph import distance_matrix

    g = torch.Generator().manual_seed(seed)
    edges = [tuple(e) for e in torch.randint(0, n, (m, 2), generator=g).tolist()]  # with loops and repeats
    edges += [(i, i + 1) for i in range(n - 1)]  # a long chain: paths longer than small cutoffs
    got = distance_matrix(n, edges, cutoff)
    assert got.dtype == torch.int16
    assert torch.equal(got, _bfs_reference(n, edges, cutoff))


def test_edge_bias_matches_unique_over_all_pairs() -> None:
    from ghn_init.networks.graphormer import MAX_EDGE_VALUE, EdgeAwareAttention

    torch.manual_seed(0)
    attn = EdgeAwareAttention(16, 2, embeds_edges=True).eval()
    edges = torch.randint(0, 51, (2, 9, 9))
    edges[0, :3] = 0
    fw, bw = edges + 2, edges.transpose(1, 2) + 2
    values, inverse = torch.unique(fw * MAX_EDGE_VALUE + bw, return_inverse=True)
    table = torch.cat(
        (attn.edge_embed.embed(values // MAX_EDGE_VALUE), attn.edge_embed.embed(values % MAX_EDGE_VALUE)), -1
    )
    expected = attn.proj_e(table)[inverse].permute(0, 3, 1, 2)
    with torch.no_grad():
        assert torch.equal(attn.edge_bias(edges), expected.detach())


# ------------------------------------------------------------------------------- module walks of recording


class _TwiceHeld(nn.Module):
    """A tensor held under two names by one module, a module reachable by two paths, a None parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(2, 2)
        self.b = self.a
        self.w = nn.Parameter(torch.ones(2))
        self.register_parameter("none", None)
        self.v = self.w


class _Renamed(nn.Module):
    """A module whose class overrides ``named_parameters``: the override is what is read."""

    def __init__(self) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.ones(1))

    def named_parameters(self, *args, **kwargs):  # type: ignore[override]
        for name, p in super().named_parameters(*args, **kwargs):
            yield "renamed_" + name, p


@pytest.mark.parametrize("remove_duplicate", [True, False])
def test_parameter_owners_equal_named_parameters_walk(remove_duplicate: bool) -> None:
    model = nn.Sequential(_TwiceHeld(), _Renamed(), torchvision.models.mobilenet_v3_small())
    model.append(model[0])  # the same module twice
    expected: dict[int, list] = {}
    for module_name, module in model.named_modules(remove_duplicate=remove_duplicate):
        for name, p in module.named_parameters(recurse=False, remove_duplicate=remove_duplicate):
            expected.setdefault(id(p), []).append((f"{module_name}.{name}" if module_name else name, module))
    assert autograd_trace.parameter_owners(model, remove_duplicate=remove_duplicate) == expected
    assert any(name.endswith("renamed_p") for names in expected.values() for name, _ in names)


class _OwnTrain(nn.Module):
    """A module whose ``train`` does more than set flags: recording must still call it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    calls: list[bool] = []  # on the class: recording puts the module's own attributes back

    def train(self, mode: bool = True):  # type: ignore[override]
        type(self).calls.append(mode)
        return super().train(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert not self.training and not self.conv.training
        return self.conv(x)


def test_eval_mode_sets_and_restores_every_flag() -> None:
    model = torchvision.models.mobilenet_v3_small()
    model.features[1].train(False)  # mixed modes come back as they were
    before = [m.training for m in model.modules()]
    with autograd_trace.eval_mode(model):
        assert not any(m.training for m in model.modules())
    assert [m.training for m in model.modules()] == before
    own = nn.Sequential(_OwnTrain())
    _OwnTrain.calls.clear()
    record(own, (3, 4, 4), meta=True)
    assert _OwnTrain.calls == [False]  # model.eval() ran, since a module overrides train
    assert own.training and own[0].training and own[0].conv.training


@pytest.mark.parametrize("weight_norm", [True, False])
def test_a_group_of_1d_predictions_is_fitted_once_with_each_tensors_values(weight_norm: bool) -> None:
    """Scaling and tiling a group of (weight, bias) rows once gives every tensor what fitting it alone gives."""
    from ghn_init.decode import GROUP_TILE_MAX, fit_to_shape, fit_vector_group

    torch.manual_seed(0)
    decoded = torch.randn(5, 2, 64)
    for length in (17, 64, 100, 576):  # cropped, exact, tiled with a remainder, tiled 9 times
        group = fit_vector_group(decoded, length, weight_norm)
        assert group.shape[-1] == max(length, 64)
        for j, r, n in itertools.product(range(5), (0, 1), sorted({1, 17, 64, length})):
            alone = fit_to_shape(decoded[j][r], (n,), True, (r == 0) if weight_norm else None)
            together = fit_to_shape(group[j][r], (n,), True, None)
            torch.testing.assert_close(together, alone, rtol=2e-7, atol=0, msg=f"{j} {r} {n}")
    huge = GROUP_TILE_MAX // (2 * 5) + 64
    group = fit_vector_group(decoded, huge, weight_norm)
    assert group.shape[-1] == 64  # too large to tile as a group: only scaled, each tensor tiles its own row
    alone = fit_to_shape(decoded[2][1], (huge,), True, False if weight_norm else None)
    torch.testing.assert_close(fit_to_shape(group[2][1], (huge,), True, None), alone, rtol=2e-7, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_weight_group_scaled_at_once_equals_each_tensor_scaled_bit_for_bit(dtype: torch.dtype) -> None:
    """Inference scales a decoded weight group with one multiply by a column of fan-in factors; each row equals
    ``scale(row, True, its shape)``, the per-tensor multiply by a Python float, bit for bit (PyTorch rounds the
    scalar to the tensor's dtype). A position embedding's row (factor None) is left as decoded."""
    from ghn_init.decode import scale
    from ghn_init.networks.ghn import _scale_group

    torch.manual_seed(0)
    decoded = torch.randn(5, 16, 16, 3, 3, dtype=dtype)
    shapes = [(32, 16, 3, 3), (16, 1, 3, 3), (7, 5, 1, 3), (1, 197, 16, 16), (100, 48)]
    expected = [scale(decoded[j], True, shape=s) for j, s in enumerate(shapes)]
    got = _scale_group(decoded.clone(), shapes)
    for j in range(len(shapes)):
        assert torch.equal(got[j], expected[j]), shapes[j]
    assert torch.equal(got[3], decoded[3])


def test_weight_crops_are_kept_between_inference_calls_and_follow_every_change_of_the_weights() -> None:
    """The decoder's weight crops (a 3x3 kernel's rows of ``fc``, 9 of 16 output channels of the last layer) are
    copied once and reused by later inference calls; an in-place update of the weights (an optimizer step), a
    replaced weight or autograd (training) gets fresh crops, so values always follow the current weights. The kept
    crops are not pickled with the module."""
    import copy
    import pickle

    ghn = tiny_ghn("ghn3", hid=16, max_shape=(16, 16, 5, 5), num_classes=10).eval()
    dec = ghn.decoder
    x, shape, channels = torch.randn(3, 16), (16, 16, 3, 3), (9, 16)
    made = []
    cropped = dec._cropped

    def counting(key, sources, make):  # type: ignore[no-untyped-def]
        return cropped(key, sources, lambda: (made.append(key), make())[1])

    dec._cropped = counting  # type: ignore[method-assign]
    with torch.no_grad():
        first = dec(x, shape, channels=channels)
        assert len(made) == 2  # fc's 3x3 rows, the last layer's 9 x 16 channels
        assert torch.equal(dec(x, shape, channels=channels), first) and len(made) == 2  # reused
        dec.conv[2].weight.mul_(2.0)  # in place, as an optimizer step: the version counter moves
        changed = dec(x, shape, channels=channels)
        assert len(made) == 3 and not torch.allclose(changed, first)
        dec.fc[0].weight = nn.Parameter(dec.fc[0].weight.detach() + 1.0)  # replaced
        replaced = dec(x, shape, channels=channels)
        assert len(made) == 4
    fresh = tiny_ghn("ghn3", hid=16, max_shape=(16, 16, 5, 5), num_classes=10).eval().decoder
    fresh.load_state_dict(dec.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(replaced, fresh(x, shape, channels=channels), rtol=0, atol=0)
    made.clear()
    y = dec(x, shape, channels=channels)  # autograd on: a fresh crop each call, and gradients reach the weights
    y.sum().backward()
    assert len(made) == 2 and dec.conv[2].weight.grad is not None and dec.fc[0].weight.grad is not None
    del dec._cropped  # the instance attribute set above
    assert dec._crops and not pickle.loads(pickle.dumps(dec))._crops and not copy.deepcopy(dec)._crops
