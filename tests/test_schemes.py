"""The init-scheme registry and each built-in scheme's defining property (tiny models, no training)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torchvision

import ghn_init
from ghn_init.schemes.classic import expected_std
from ghn_init.schemes.lsuv import layer_outputs, measuring
from ghn_init.schemes.mimetic import attention_layers
from ghn_init.schemes.zero import hadamard, zero_matrix

from .conftest import tiny_cnn


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------- registry


def test_registry_lists_gets_and_warns_on_overwrite() -> None:
    names = ghn_init.list_schemes()
    for name in ("default", "orthogonal", "lsuv", "mimetic", "zero-residual", "zero", "ghn:bundled+calibrate"):
        assert name in names
    assert ghn_init.list_schemes("kaiming*") == ["kaiming-normal-fan-in", "kaiming-normal-fan-out"]
    assert ghn_init.get_scheme("orthogonal") is ghn_init.schemes.orthogonal

    def mine(model, *, data=None, generator=None):
        nn.init.zeros_(model[0].weight)

    try:
        ghn_init.register_scheme("test-mine", mine)
        assert ghn_init.get_scheme("test-mine") is mine and "test-mine" in ghn_init.list_schemes("test-*")
        with pytest.warns(UserWarning, match="registered before"):
            ghn_init.register_scheme("test-mine", lambda model, **kw: None)
        # the registered name works in compare like a built-in one
        from .test_compare import tiny_data, tiny_net

        results = ghn_init.compare([tiny_net], "default,test-mine", tiny_data(), steps=1, seeds=1, progress=False)
        assert results.schemes == ["default", "test-mine"]
    finally:
        ghn_init.schemes.registry._SCHEMES.pop("test-mine", None)
    with pytest.raises(ghn_init.InvalidArgumentError, match="unknown init scheme 'no-such'.*lsuv"):
        ghn_init.get_scheme("no-such")
    with pytest.raises(ghn_init.InvalidArgumentError, match="not starting with 'ghn:'"):
        ghn_init.register_scheme("ghn:mine", mine)
    with pytest.raises(ghn_init.InvalidArgumentError, match="callable"):
        ghn_init.register_scheme("x", 3)
    with pytest.raises(ghn_init.InvalidArgumentError, match="unknown post-processing"):
        ghn_init.get_scheme("ghn:bundled+orht")


# ---------------------------------------------------------------- fan-in / fan-out


@pytest.mark.parametrize("kind", ["kaiming-normal-fan-in", "kaiming-normal-fan-out", "xavier-uniform", "xavier-normal"])
def test_fan_schemes_draw_with_their_variance(kind: str) -> None:
    model = nn.Sequential(nn.Conv2d(64, 256, 3), nn.Conv2d(256, 32, 1), nn.Flatten(), nn.Linear(32, 10))
    before = snapshot(model)
    report = ghn_init.get_scheme(kind)(model, generator=torch.Generator().manual_seed(0))
    assert report.touched == ["0.weight", "1.weight"], "every matrix but the classifier"
    for i in (0, 1):
        w = model[i].weight
        assert abs(w.std().item() / expected_std(kind, w) - 1) < 0.03
    assert torch.equal(model[3].weight, before["3.weight"]) and torch.equal(model[0].bias, before["0.bias"])
    if kind.startswith("xavier-uniform"):
        assert model[0].weight.abs().max() <= math.sqrt(3) * expected_std(kind, model[0].weight) + 1e-6


def test_orthogonal_matrices_have_unit_singular_values() -> None:
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.Flatten(), nn.Linear(4, 3), nn.Linear(3, 2))
    ghn_init.get_scheme("orthogonal")(model)
    for w in (model[0].weight.reshape(16, -1), model[2].weight):
        assert torch.allclose(torch.linalg.svdvals(w), torch.ones(min(w.shape)), atol=1e-5)


# ---------------------------------------------------------------- lsuv


def test_lsuv_brings_every_layer_output_variance_to_one() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, bias=False),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Conv2d(16, 32, 3, stride=2),
        nn.BatchNorm2d(32),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )
    x = torch.randn(64, 3, 12, 12) * 5 + 2
    bn = snapshot(model[6])
    with measuring(model):
        before = {m: o.var().item() for m, o in layer_outputs(model, x).items()}
    assert any(abs(v - 1) > 0.5 for v in before.values()), "the test must start away from unit variance"
    state = torch.get_rng_state()
    report = ghn_init.get_scheme("lsuv")(model, data=(x, torch.zeros(64, dtype=torch.long)))
    assert torch.equal(torch.get_rng_state(), state), "the global RNG is left as it was"
    with measuring(model):
        after = layer_outputs(model, x)
    assert len(after) == 4 and all(abs(o.var().item() - 1) < 0.05 for o in after.values()), [
        o.var().item() for o in after.values()
    ]
    assert report.touched == ["0.weight", "2.weight", "5.weight", "9.weight"]
    assert all(torch.equal(v, model[6].state_dict()[k]) for k, v in bn.items()), "running statistics unchanged"
    assert model.training and model[4].training
    with pytest.raises(ghn_init.InvalidArgumentError, match="pass data="):
        ghn_init.get_scheme("lsuv")(model)


# ---------------------------------------------------------------- mimetic


def _cos_identity(a: torch.Tensor) -> float:
    a, eye = a.detach(), torch.eye(a.shape[0])
    return float((a * eye).sum() / (a.norm() * eye.norm()))


class HFSelfAttention(nn.Module):
    """The module layout of Hugging Face BERT/ViT attention (query/key/value; output.dense in the parent)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.num_attention_heads = heads
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)


class HFOutput(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, dim)


class HFAttention(nn.Module):
    def __init__(self, dim: int = 64, heads: int = 4) -> None:
        super().__init__()
        self.attention, self.output = HFSelfAttention(dim, heads), HFOutput(dim)


def _timm_vit() -> nn.Module:
    timm = pytest.importorskip("timm")
    return timm.create_model("vit_tiny_patch16_224", img_size=16, patch_size=8, depth=2, num_classes=3)


@pytest.mark.parametrize("kind", ["torchvision", "timm", "huggingface"])
def test_mimetic_makes_qk_a_positive_and_vo_a_negative_identity(kind: str) -> None:
    torch.manual_seed(0)
    if kind == "torchvision":
        model = torchvision.models.VisionTransformer(16, 8, 2, 4, 64, 128, num_classes=3)
    elif kind == "timm":
        model = _timm_vit()
    else:
        model = nn.Sequential(HFAttention(), HFAttention())
    layers = attention_layers(model)
    assert len(layers) == 2
    default = [(_cos_identity(a.q.T @ a.k), _cos_identity(a.v.T @ a.o.T)) for a in layers]
    assert all(abs(c) < 0.2 for pair in default for c in pair), default
    before = snapshot(model)
    report = ghn_init.get_scheme("mimetic")(model, generator=torch.Generator().manual_seed(0))
    for a in attention_layers(model):
        heads, size = a.heads, a.q.shape[0] // a.heads
        assert _cos_identity(a.q.T @ a.k) > 0.5 and _cos_identity(a.v.T @ a.o.T) < -0.5
        for h in range(heads):  # each head's product: the best rank-k approximation, so its trace has the sign
            rows = slice(h * size, (h + 1) * size)
            assert torch.trace(a.q[rows].T @ a.k[rows]) > 0 and torch.trace(a.v[rows].T @ a.o[:, rows].T) < 0
    changed = {k for k, v in snapshot(model).items() if not torch.equal(v, before[k])}
    assert changed == set(report.touched), "only the projections are written (no bias, no norm)"


def test_mimetic_refuses_a_model_without_attention() -> None:
    model = tiny_cnn(3)
    before = snapshot(model)
    with pytest.raises(ghn_init.UnsupportedModelError, match="mimetic init applies to self-attention") as e:
        ghn_init.get_scheme("mimetic")(model)
    assert e.value.scheme == "mimetic" and all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


# ---------------------------------------------------------------- zero-residual


def test_zero_residual_makes_every_resnet_block_the_identity() -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    report = ghn_init.get_scheme("zero-residual")(model, input_size=(3, 32, 32))
    blocks = [m for m in model.modules() if isinstance(m, torchvision.models.resnet.BasicBlock)]
    assert len(report.touched) == len(blocks) == 8
    x = torch.randn(2, 64, 8, 8)
    with torch.no_grad():
        for block in blocks:
            x = (
                x[:, : block.conv1.in_channels]
                if x.shape[1] >= block.conv1.in_channels
                else torch.randn(2, block.conv1.in_channels, 8, 8)
            )
            shortcut = block.downsample(x) if block.downsample is not None else x
            assert torch.allclose(block(x), torch.relu(shortcut)), "a block with a zero branch passes x on"
            x = block(x)
    assert set(report.touched) == {f"{n}.bn2.weight" for n, m in model.named_modules() if m in blocks}


def test_zero_residual_follows_the_graph_not_the_names() -> None:
    """The same blocks with meaningless names: the branch is found from the recorded graph."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("convnext_atto", num_classes=3).eval()
    report = ghn_init.get_scheme("zero-residual")(model, input_size=(3, 32, 32))
    blocks = [m for m in model.modules() if type(m).__name__ == "ConvNeXtBlock"]
    assert len(blocks) == len(report.touched) // 2 == 12  # fc2 weight and bias of each block
    with torch.no_grad():
        for block in blocks:
            x = torch.randn(2, block.conv_dw.in_channels, 4, 4)
            assert torch.allclose(block(x), x, atol=1e-6)
        x = torch.randn(2, 3, 32, 32)
        assert torch.isfinite(model(x)).all()

    class Renamed(nn.Module):  # a residual MLP whose names say nothing
        def __init__(self) -> None:
            super().__init__()
            self.s, self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)
            self.c, self.d = nn.LayerNorm(8), nn.Linear(8, 2)

        def forward(self, x):
            x = self.s(x)
            return self.d(x + self.c(self.b(torch.relu(self.a(x)))))

    net = Renamed()
    assert ghn_init.get_scheme("zero-residual")(net, input_size=(8,)).touched == ["c.weight"]
    x = torch.randn(4, 8)
    assert torch.allclose(net(x), net.d(net.s(x)))
    with pytest.raises(ghn_init.UnsupportedModelError, match="no residual branch"):
        ghn_init.get_scheme("zero-residual")(tiny_cnn(3), input_size=(3, 8, 8))


def test_zero_residual_on_a_vit_zeroes_the_projections_into_the_stream() -> None:
    model = torchvision.models.VisionTransformer(16, 8, 2, 4, 64, 128, num_classes=3).eval()
    report = ghn_init.get_scheme("zero-residual")(model, input_size=(3, 16, 16))
    assert len(report.touched) == 8 and "encoder.pos_embedding" not in report.touched
    x = torch.randn(2, 5, 64)
    with torch.no_grad():
        for layer in model.encoder.layers:
            assert torch.allclose(layer(x), x)


# ---------------------------------------------------------------- zero (ZerO)


def test_zero_is_identities_and_hadamards_and_draws_nothing() -> None:
    def build():
        return nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),  # grows: c I* H I*
            nn.Conv2d(8, 8, 3, padding=1),  # square: identity at the kernel centre
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(8, 4),  # shrinks: partial identity
        )

    a, b = build(), build()
    torch.manual_seed(1)
    ghn_init.get_scheme("zero")(a)
    torch.manual_seed(2)
    ghn_init.get_scheme("zero")(b)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items() if k.endswith("weight"))
    assert torch.equal(a[1].weight[:, :, 1, 1], torch.eye(8)) and a[1].weight.abs().sum() == 8
    assert torch.equal(a[4].weight, torch.eye(4, 8))
    h = hadamard(3)
    assert torch.equal(h @ h.T, 8 * torch.eye(8))
    grows = a[0].weight[:, :, 1, 1]
    assert torch.allclose(grows, 2 ** (-1) * h[:, :3]) and torch.equal(zero_matrix(8, 3), grows)
    model = torchvision.models.resnet18(num_classes=10)
    report = ghn_init.get_scheme("zero")(model, input_size=(3, 32, 32))
    assert "layer1.0.bn2.weight" in report.touched and model.layer1[0].bn2.weight.abs().sum() == 0
    with pytest.raises(ghn_init.UnsupportedModelError, match="CNNs and MLPs"):
        ghn_init.get_scheme("zero")(torchvision.models.VisionTransformer(16, 8, 1, 2, 32, 64, num_classes=3))


# ---------------------------------------------------------------- gradinit


def test_gradinit_rescales_each_tensor_so_the_first_step_helps() -> None:
    from ghn_init.schemes.gradinit import lookahead_loss

    torch.manual_seed(0)
    model = tiny_cnn(3, widths=(8, 8))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(4)  # a badly scaled init: the first SGD step overshoots
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(256, 3, 8, 8, generator=g), torch.randint(0, 3, (256,), generator=g)
    x[torch.arange(256), y] += 2
    before = snapshot(model)

    def after_one_step() -> tuple[float, float]:
        model.train()
        params = {n: p.detach() for n, p in model.named_parameters()}
        loss, norm = lookahead_loss(model, params, (x[:128], y[:128]), (x[128:], y[128:]), 0.1)
        return loss.item(), norm.item()

    # above the gradient-norm bound, the scales bring the first step's gradient norm down
    loss0, norm0 = after_one_step()
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    report = ghn_init.get_scheme("gradinit")(model, data=(x, y), generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(b, dict(model.named_buffers())[k]) for k, b in buffers.items()), "buffers unchanged"
    loss1, norm1 = after_one_step()
    assert norm0 > 1 and norm1 < 0.5 * norm0, (norm0, norm1)
    for name, p in model.named_parameters():  # one positive scalar per tensor: the init's directions are kept
        s = float(report.details[name][1:])
        assert s >= 0.01 and torch.allclose(p, before[name] * s, rtol=1e-2, atol=1e-6), name
    # within the bound, they lower the loss after one SGD step
    ghn_init.get_scheme("gradinit")(model, data=(x, y), max_grad_norm=1e3, generator=torch.Generator().manual_seed(1))
    loss2, _ = after_one_step()
    assert loss2 < 0.9 * loss1, (loss1, loss2)
    with pytest.raises(ghn_init.InvalidArgumentError, match="labelled data"):
        ghn_init.get_scheme("gradinit")(model, data=x)


def test_gradinit_on_an_op_without_second_derivatives_is_unsupported_and_changes_nothing() -> None:
    # torch has no double backward for hardsigmoid (MobileNetV3's gates): gradinit cannot differentiate through
    # the SGD step there; it must say so in one typed line (it was a raw RuntimeError) and leave the model alone
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Hardsigmoid(), nn.Flatten(), nn.Linear(8 * 6 * 6, 3))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 3, 8, 8, generator=g), torch.randint(0, 3, (32,), generator=g)
    before = snapshot(model)
    with pytest.raises(ghn_init.UnsupportedModelError, match="hardsigmoid_backward") as info:
        ghn_init.get_scheme("gradinit")(model, data=(x, y), generator=g)
    assert "\n" not in str(info.value) and info.value.scheme == "gradinit"
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
