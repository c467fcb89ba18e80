"""Planning: which tensor each node predicts, its decoder kind and the group it is decoded in."""

from __future__ import annotations

import torch.nn as nn

import ghn_init
from ghn_init.planning import DecoderKind, decoding, group_size, writable_slots
from ghn_init.shapes import token_map_shape

MAX_SHAPE = (64, 64, 16, 16)


def test_group_sizes_round_multiples_of_three_up_and_large_sizes_to_the_limit() -> None:
    assert [group_size(n, 64) for n in (1, 3, 8, 12, 16, 24, 31, 32, 48, 200)] == [1, 4, 8, 16, 16, 64, 31, 64, 64, 64]
    assert group_size(6, 16) == 16  # 6 -> 8 is half of the limit 16


def test_each_shape_gets_its_decoder_kind_and_decoded_shape() -> None:
    cases = {
        (96,): (DecoderKind.VECTOR, (64,)),
        (96, 24, 3, 3): (DecoderKind.WEIGHT, (64, 64, 3, 3)),
        (24, 20, 3, 3): (DecoderKind.WEIGHT, (64, 20, 3, 3)),
        (10, 8): (DecoderKind.WEIGHT, (10, 8, 1, 1)),  # a linear layer is decoded as a 1x1 conv
        (1, 197, 768): (DecoderKind.WEIGHT, (1, 768, 14, 14)),  # ViT tokens as a square map
        (4, 5, 7): (DecoderKind.TENSOR_3D, (4, 5, 7)),
        (2, 2, 2, 2, 2): (None, ()),  # 5-D: no GHN head
    }
    for shape, expected in cases.items():
        assert decoding(shape, MAX_SHAPE) == expected, shape
    assert decoding((1000, 512), MAX_SHAPE, last_weight=True) == (DecoderKind.CLASSIFIER, (64, 64))
    assert decoding((10, 512), MAX_SHAPE, last_weight=True) == (DecoderKind.CLASSIFIER, (10, 64))
    assert decoding((1000,), MAX_SHAPE, last_bias=True) == (DecoderKind.CLASSIFIER_BIAS, (64,))


def test_token_maps_only_for_token_embeddings() -> None:
    assert token_map_shape((1, 50, 32)) == (1, 32, 7, 7)
    assert token_map_shape((1, 1, 32)) is None  # a class token
    assert token_map_shape((2, 50, 32)) is None and token_map_shape((50, 32)) is None


def test_writable_slots_name_tensors_the_way_graph_nodes_do() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.MultiheadAttention(4, 1))
    slots = writable_slots(model)
    assert {"0.weight", "0.bias", "1.weight", "1.bias", "2.in_proj_weight", "2.in_proj_bias"} <= set(slots)
    assert slots["0.weight"].is_weight and not slots["0.bias"].is_weight
    assert slots["2.in_proj_weight"].attr == "in_proj_weight" and slots["2.in_proj_weight"].shape == (12, 4)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 3)
        self.bn = nn.BatchNorm2d(12)
        self.conv2 = nn.Conv2d(12, 12, 3, bias=False)
        self.fc = nn.Linear(12, 10)

    def forward(self, x):
        x = self.conv2(self.bn(self.conv(x)).relu())
        return self.fc(x.mean((2, 3)))


def test_plan_pairs_nodes_with_tensors_and_groups_same_shaped_ones() -> None:
    model = Net()
    graph = ghn_init.trace(model, (3, 16, 16))
    p = ghn_init.plan(graph, model, MAX_SHAPE)
    by_name = {t.slot.name: t for t in p.targets}
    assert set(by_name) == {"conv.weight", "conv.bias", "bn.weight", "conv2.weight", "fc.weight", "fc.bias"}
    assert by_name["bn.weight"].bias is not None and by_name["bn.weight"].bias.name == "bn.bias"
    assert by_name["conv.weight"].key == (DecoderKind.WEIGHT, (16, 4, 3, 3))
    assert by_name["conv2.weight"].key == (DecoderKind.WEIGHT, (16, 16, 3, 3))
    assert by_name["fc.weight"].kind is DecoderKind.CLASSIFIER and by_name["fc.weight"].is_classifier
    assert by_name["fc.bias"].kind is DecoderKind.CLASSIFIER_BIAS
    assert by_name["conv.bias"].key == by_name["bn.weight"].key == (DecoderKind.VECTOR, (16,))  # one decoder call
    # every node is told a shape: the tensor's for targets, the node's own (or None) elsewhere
    assert len(p.shapes) == len(graph.nodes)
    assert all(p.shapes[t.node] == t.slot.shape for t in p.targets)
    assert set(p.slots()) == set(by_name) | {"bn.bias"}
    assert set(p.slots(predict_classifier=False)) == set(by_name) - {"fc.weight", "fc.bias"} | {"bn.bias"}
