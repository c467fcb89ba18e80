"""The GHN's parts: the shape encoder, the fit/scale helpers, and GHN.forward (decoding by kind, dry runs)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

import ghn_init
from ghn_init.decode import fit_to_shape, scale
from ghn_init.networks.shape_encoder import ShapeEncoder, shape_to_4d
from ghn_init.planning import DecoderKind

from .conftest import tiny_ghn

# -- shape encoder -----------------------------------------------------------------------------------


def test_shapes_are_read_as_out_in_h_w() -> None:
    assert shape_to_4d((7,)) == (7, 1, 1, 1)
    assert shape_to_4d((7, 5)) == (7, 5, 1, 1)
    assert shape_to_4d((1, 197, 768)) == (1, 768, 14, 14)
    assert shape_to_4d((4, 5, 6)) == (4, 5, 6, 1)
    assert shape_to_4d((8, 3, 7, 7)) == (8, 3, 7, 7)


def test_shape_indices_take_the_nearest_known_size_and_a_row_for_no_shape() -> None:
    enc = ShapeEncoder(hid=8, num_classes=10, max_shape=(64, 64, 11, 11))
    idx = enc.indices([(64, 3, 3, 3), (65, 3, 3, 3), (5, 10, 2, 2), None, (10**6, 3, 99, 99)])
    ch, sp = enc.channels, enc.spatial
    assert ch[idx[0, 0]] == 64 and ch[idx[0, 1]] == 3 and sp[idx[0, 2]] == 3
    assert ch[idx[1, 0]] == 64  # 65 is nearest to 64
    assert ch[idx[2, 0]] == 8 and ch[idx[2, 1]] == 10  # 4-7 channels count as 8; num_classes is a known size
    assert sp[idx[2, 2]] == 3  # a 2x2 kernel counts as 3x3
    assert idx[3].tolist() == [len(ch), len(ch), len(sp), len(sp)]  # the extra "no shape" rows
    assert ch[idx[4, 0]] == ch[-1] and sp[idx[4, 2]] == sp[-1]  # beyond the grid: the largest
    x = torch.zeros(5, 8)
    assert enc(x, idx).shape == (5, 8) and not torch.equal(enc(x, idx)[0], enc(x, idx)[3])


# -- fit_to_shape and scale -----------------------------------------------------------------------------


def test_fit_crops_channels_and_centre_crops_kernels() -> None:
    w = torch.arange(4 * 4 * 5 * 5, dtype=torch.float32).view(4, 4, 5, 5)
    out = fit_to_shape(w, (2, 3, 3, 3), centre_crop=True)
    assert torch.equal(out, w[:2, :3, 1:4, 1:4])
    assert torch.equal(fit_to_shape(w, (2, 3, 3, 3), centre_crop=False), w[:2, :3, :3, :3])
    assert torch.equal(fit_to_shape(w, (2, 3), centre_crop=True), w[:2, :3, 2, 2])  # linear: the centre pixel


def test_fit_tiles_channels_beyond_the_decoded_size() -> None:
    w = torch.randn(4, 4, 3, 3)
    out = fit_to_shape(w, (10, 6, 3, 3), centre_crop=True)
    assert out.shape == (10, 6, 3, 3)
    assert torch.equal(out[4:8, :4], w) and torch.equal(out[8:10, 4:6], w[:2, :2])


def test_fit_turns_a_token_map_into_tokens_with_a_fresh_class_token() -> None:
    w = torch.randn(1, 8, 3, 3)
    torch.manual_seed(0)
    out = fit_to_shape(w, (1, 10, 8), centre_crop=True)
    assert out.shape == (1, 10, 8)
    assert torch.equal(out[0, 1:], w.reshape(8, 9).t())  # map pixels become tokens after the class token
    assert out[0, 0].abs().max() < 0.2  # the class token is drawn like timm's (std 0.02)


def test_scale_is_fan_in_for_weights_and_squashes_vectors() -> None:
    p = torch.ones(8, 4, 3, 3)
    assert torch.allclose(scale(p, True), torch.full_like(p, math.sqrt(2 / 36)))
    assert torch.allclose(scale(torch.ones(8, 1, 3, 3), True), torch.full((8, 1, 3, 3), math.sqrt(1 / 9)))  # depthwise
    v = torch.linspace(-10, 10, 11)
    assert (scale(v, True) > 0).all() and (scale(v, True) < 2).all()  # norm weights in (0, 2)
    assert (scale(v, False).abs() < 1).all()  # biases in (-1, 1)
    pos = torch.ones(1, 8, 14, 14)
    assert torch.equal(scale(pos, True), pos)  # position embeddings are used as predicted
    cropped = fit_to_shape(torch.randn(4, 4, 3, 3), (8, 4, 3, 3), centre_crop=True, is_weight=True)
    assert cropped.shape == (8, 4, 3, 3)


# -- GHN.forward ---------------------------------------------------------------------------------------


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(self.bn(self.conv(x)).relu().mean((2, 3)))


def graph_and_plan(ghn, model):
    graph = ghn_init.trace(model, (3, 16, 16), virtual_edge_cutoff=ghn.virtual_edge_cutoff)
    return graph, ghn_init.plan(graph, model, ghn.config.max_shape)


@pytest.mark.parametrize("kind", ["ghn2", "ghn3"])
def test_forward_returns_every_planned_tensor_by_name_in_its_shape(kind: str) -> None:
    ghn, model = tiny_ghn(kind), Net()
    graph, p = graph_and_plan(ghn, model)
    with torch.no_grad():
        (tensors,) = ghn([graph], [p])
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items() if "running" not in name}
    shapes.pop("bn.num_batches_tracked")
    assert {name: tuple(t.shape) for name, t in tensors.items()} == shapes
    assert all(torch.isfinite(t).all() for t in tensors.values())
    assert set(ghn([graph], [p], predict_classifier=False)[0]) == set(shapes) - {"fc.weight", "fc.bias"}


def test_forward_keeps_the_graph_for_training_and_is_batched_across_models() -> None:
    ghn = tiny_ghn("ghn3").train()
    graph, p = graph_and_plan(ghn, Net())
    single = ghn([graph], [p])[0]
    loss = sum(t.square().sum() for t in single.values())
    loss.backward()
    assert ghn.decoder.fc[0].weight.grad is not None and ghn.decoder_1d.fc[0].weight.grad is not None
    ghn.eval()
    with torch.no_grad():
        one = ghn([graph], [p])[0]
        pair = ghn([graph, graph], [p, p])
    for name in one:
        assert torch.allclose(pair[0][name], one[name], atol=1e-6), name
        assert torch.allclose(pair[1][name], one[name], atol=1e-6), name


def test_each_decoder_kind_uses_its_own_head() -> None:
    ghn = tiny_ghn("ghn3")
    x = torch.randn(2, ghn.config.hid)
    with torch.no_grad():
        assert ghn._decode(DecoderKind.WEIGHT, (16, 8, 3, 3), x).shape == (2, 16, 8, 3, 3)
        assert ghn._decode(DecoderKind.CLASSIFIER, (16, 16), x).shape == (2, ghn.config.num_classes, 16)
        assert ghn._decode(DecoderKind.VECTOR, (16,), x).shape == (2, 2, 16)  # rows: weight, bias
        assert ghn._decode(DecoderKind.CLASSIFIER_BIAS, (16,), x).shape == (2, 2, ghn.config.num_classes)
        assert ghn._decode(DecoderKind.TENSOR_3D, (4, 4, 4), x).shape == (2, 2 * 16, 1, 1)


def test_a_sink_sees_every_tensor_once_and_nothing_is_kept() -> None:
    ghn = tiny_ghn("ghn3")
    graph, p = graph_and_plan(ghn, Net())
    seen: dict[str, torch.Tensor] = {}

    def sink(index: int, name: str, tensor: torch.Tensor) -> None:
        assert index == 0 and name not in seen
        seen[name] = tensor

    with torch.no_grad():
        kept = ghn([graph], [p], sink=sink)
        direct = ghn([graph], [p])[0]
    assert kept == [{}] and seen.keys() == direct.keys()
    assert all(torch.equal(seen[n], direct[n]) for n in direct)
    with pytest.raises(ValueError, match="one plan per graph"):
        ghn([graph], [])


def test_a_dry_run_predicts_a_meta_model_and_refuses_to_write() -> None:
    ghn = tiny_ghn("ghn3")
    with torch.device("meta"):
        model = Net()
    prediction = ghn_init.predict(model, ghn, input_size=(3, 16, 16), dry_run=True)
    real = ghn_init.predict(Net(), ghn, input_size=(3, 16, 16))
    assert prediction.dry_run and prediction.tensors == {}
    assert prediction.report.predicted == real.report.predicted and prediction.report.fraction_predicted == 1.0
    assert next(ghn.parameters()).device.type == "cpu"  # the GHN was not moved to the meta device
    with pytest.raises(ValueError, match="dry-run"):
        prediction.write()
