"""Each graph-reduction rule of graph/builder.py on a tiny hand-made raw graph (no recording, no fixtures)."""

from __future__ import annotations

import torch.nn as nn
import torchvision

from ghn_init.graph.autograd_trace import RawGraph, RawNode
from ghn_init.graph.builder import (
    _Adjacency,
    _count_paths,
    _matches_any,
    _node_shape,
    _pool_before_classifier,
    _published_name,
    _Reducer,
    _split_position_embedding,
    build_graph,
    topological_order,
)


def param(name: str, module: nn.Module, size: tuple[int, ...]) -> RawNode:
    return RawNode(name, module=module, size=size, is_param=True)


def reducer(nodes: list[RawNode], edges: set[tuple[int, int]]) -> _Reducer:
    return _Reducer(list(nodes), _Adjacency(len(nodes), edges))


def names(r: _Reducer) -> list[str]:
    return [n.name for n in r.nodes]


def named_edges(r: _Reducer) -> set[tuple[str, str]]:
    return {(r.nodes[s].name, r.nodes[d].name) for s, d in r.adj.edges()}


def graph_edges(graph) -> set[tuple[str, str]]:
    return {(graph.nodes[s].name, graph.nodes[d].name) for s, d in graph.edges}


def two_convs() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3, bias=False))


# -- rule 1: unsupported nodes are bypassed --------------------------------------------------------------


def test_an_operation_outside_the_vocabulary_is_bypassed() -> None:
    model = two_convs()
    raw = RawGraph(
        [
            param("2.weight", model[2], (4, 4, 3, 3)),
            RawNode("ReluBackward0"),
            param("0.bias", model[0], (4,)),
            param("0.weight", model[0], (4, 3, 3, 3)),
        ],
        {(3, 2), (2, 1), (1, 0)},
    )
    graph = build_graph(raw, model)
    assert [n.name for n in graph.nodes] == ["input", "0.weight", "0.bias", "2.weight"]
    assert [n.type for n in graph.nodes] == ["input", "conv", "bias", "conv"]
    assert graph_edges(graph) == {("input", "0.weight"), ("0.weight", "0.bias"), ("0.bias", "2.weight")}
    assert graph.nodes[1].module_name == "0" and graph.nodes[1].shape == (4, 3, 3, 3)


def test_a_parameter_of_an_unknown_module_is_bypassed_and_a_norm_bias_is_no_node() -> None:
    prelu, bn = nn.PReLU(4), nn.BatchNorm2d(4)
    nodes = [
        param("bn.bias", bn, (4,)),
        param("bn.weight", bn, (4,)),
        param("act.weight", prelu, (4,)),
        RawNode("MaxPool2DWithIndicesBackward0"),
    ]
    r = reducer(nodes, {(3, 2), (2, 1), (1, 0)})
    r.reduce(first=True)
    assert names(r) == ["bn.weight", "MaxPool2DWithIndicesBackward0"]
    assert named_edges(r) == {("MaxPool2DWithIndicesBackward0", "bn.weight")}


def test_removed_names_match_as_op_substrings_or_dotted_suffixes() -> None:
    removed = {"act.weight", "GeluBackward0"}
    assert _matches_any("blocks.0.act.weight", removed)  # a dotted suffix of a qualified name
    assert not _matches_any("blocks.0.fact.weight", removed)  # not a suffix at a dot
    assert _matches_any("GeluBackward0", removed) and not _matches_any("ReluBackward0", removed)


# -- rule 1b: sums and concatenations of a single input are no operation ------------------------------


def test_a_sum_is_kept_only_with_two_inputs() -> None:
    lin = nn.Linear(2, 2)
    nodes = [
        RawNode("AddBackward0"),  # residual: two inputs
        param("a.weight", lin, (2, 2)),
        RawNode("AddBackward0"),  # one input only: no operation
        param("b.weight", lin, (2, 2)),
    ]
    r = reducer(nodes, {(3, 2), (2, 1), (1, 0), (3, 0)})
    r.reduce(first=False)
    assert names(r) == ["AddBackward0", "a.weight", "b.weight"]
    assert named_edges(r) == {("b.weight", "a.weight"), ("a.weight", "AddBackward0"), ("b.weight", "AddBackward0")}


# -- rule 1c: mean and multiply: global pooling and channel SE, nothing else -----------------------------


def test_a_mean_is_global_pooling_in_a_net_without_squeeze_excitation() -> None:
    lin = nn.Linear(2, 2)
    nodes = [param("fc.weight", lin, (2, 2)), RawNode("MeanBackward1"), param("conv.weight", lin, (2, 2))]
    r = reducer(nodes, {(2, 1), (1, 0)})
    r.reduce(first=True)
    assert names(r) == ["fc.weight", "MeanBackward1", "conv.weight"]


def test_squeeze_excitation_keeps_its_multiply_and_drops_its_squeeze_mean() -> None:
    lin = nn.Linear(2, 2)
    nodes = [  # in recording order: from the output back (DFS), so the gate comes before its inputs
        RawNode("MulBackward0"),
        RawNode("SigmoidBackward0"),
        param("se.fc2.weight", lin, (2, 2)),
        RawNode("ReluBackward0"),
        param("se.fc1.weight", lin, (2, 2)),
        RawNode("MeanBackward1"),
        param("conv.weight", lin, (2, 2)),
    ]
    edges = {(6, 5), (5, 4), (4, 3), (3, 2), (2, 1), (1, 0), (6, 0)}
    r = reducer(nodes, edges)
    r.reduce(first=True)
    assert names(r) == ["MulBackward0", "se.fc2.weight", "se.fc1.weight", "conv.weight"]
    assert ("conv.weight", "MulBackward0") in named_edges(r)  # the gated path and the direct one meet at the cse


def test_a_multiply_in_a_net_without_squeeze_excitation_is_dropped() -> None:
    lin = nn.Linear(2, 2)
    nodes = [param("b.weight", lin, (2, 2)), RawNode("MulBackward0"), param("a.weight", lin, (2, 2))]
    r = reducer(nodes, {(2, 1), (1, 0)})
    r.reduce(first=True)
    assert names(r) == ["b.weight", "a.weight"] and named_edges(r) == {("a.weight", "b.weight")}


# -- rule 2: data flows input -> weight -> bias --------------------------------------------------------


def test_a_source_weight_moves_in_front_of_its_layer() -> None:
    conv = nn.Conv2d(2, 2, 1)
    other = nn.Conv2d(2, 2, 1)
    nodes = [
        param("prev.weight", other, (2, 2, 1, 1)),
        param("c.weight", conv, (2, 2, 1, 1)),
        param("c.bias", conv, (2,)),
    ]
    # as autograd shows it: the weight is a leaf beside the layer's input, both feeding the bias node
    r = reducer(nodes, {(0, 2), (1, 2)})
    r.fix_weight_edges()
    assert names(r) == ["prev.weight", "c.bias", "c.weight"]
    assert named_edges(r) == {("prev.weight", "c.weight"), ("c.weight", "c.bias")}


def test_a_weight_with_an_input_stays_where_it_is() -> None:
    conv = nn.Conv2d(2, 2, 1)
    nodes = [param("prev.weight", conv, (2, 2, 1, 1)), param("c.weight", conv, (2, 2, 1, 1))]
    r = reducer(nodes, {(0, 1)})
    r.fix_weight_edges()
    assert names(r) == ["prev.weight", "c.weight"] and named_edges(r) == {("prev.weight", "c.weight")}


# -- rule 3: attention routes its value path through the softmax (DeepNets-1M msa) ----------------------


def test_the_value_path_is_routed_through_the_softmax() -> None:
    lin = nn.Linear(2, 2)
    nodes = [
        param("qk.weight", lin, (2, 2)),
        RawNode("SoftmaxBackward0"),
        param("v.weight", lin, (2, 2)),
        param("out.weight", lin, (2, 2)),
    ]
    r = reducer(nodes, {(0, 1), (1, 3), (2, 3)})
    r.fix_softmax_edges()
    assert named_edges(r) == {
        ("qk.weight", "SoftmaxBackward0"),
        ("v.weight", "SoftmaxBackward0"),
        ("SoftmaxBackward0", "out.weight"),
    }


def test_paths_are_counted_up_to_the_limit() -> None:
    succ = [{1, 2}, {3}, {3}, set()]  # a diamond: two paths 0 -> 3
    assert _count_paths(succ, 0, 3, limit=2) == 2
    assert _count_paths(succ, 1, 3, limit=2) == 1
    assert _count_paths(succ, 3, 0, limit=2) == 0


# -- rule 4: topological order, the input node, and per-model corrections --------------------------------


def test_topological_order_is_by_generations_in_index_order() -> None:
    succ = [set(), {0}, {0}, {1, 2}]  # 3 -> {1, 2} -> 0
    assert topological_order(4, succ) == [3, 1, 2, 0]
    assert topological_order(2, [{1}, {0}]) is None  # a cycle


def test_weights_without_inputs_get_an_edge_from_the_input_node() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1))  # two parallel stems
    raw = RawGraph(
        [RawNode("AddBackward0"), param("1.weight", model[1], (4, 3, 1, 1)), param("0.weight", model[0], (4, 3, 1, 1))],
        {(1, 0), (2, 0)},
    )
    graph = build_graph(raw, model)
    assert graph.nodes[0].name == "input"
    assert graph_edges(graph) >= {("input", "0.weight"), ("input", "1.weight")}


def test_the_vit_position_embedding_feeds_a_new_sum_node() -> None:
    encoder = torchvision.models.vision_transformer.Encoder(5, 1, 1, 4, 4, 0.0, 0.0)
    nodes = [RawNode("input"), param("encoder.pos_embedding", encoder, (1, 5, 4)), RawNode("x")]
    out, edges = _split_position_embedding(nodes, {(0, 1), (1, 2)})
    assert [n.name for n in out] == ["input", "encoder.pos_embedding", "AddBackward0", "x"]
    # the sum takes over every edge of the embedding; the embedding only feeds the sum
    assert edges == {(0, 2), (2, 3), (1, 2)}


def test_squeezenet_pools_before_its_classifier() -> None:
    nodes = [RawNode("f"), RawNode("classifier.1.weight"), RawNode("classifier.1.bias"), RawNode("MeanBackward1")]
    assert [n.name for n in _pool_before_classifier(nodes)] == [
        "f",
        "MeanBackward1",
        "classifier.1.weight",
        "classifier.1.bias",
    ]


# -- node shapes and names ---------------------------------------------------------------------------


def test_node_shapes_are_what_the_published_builder_tells_the_ghn() -> None:
    lin = nn.Linear(2, 2)
    tokens = param("pos", lin, (1, 197, 768))
    assert _node_shape(tokens, "pos_enc", 1, 10) == (1, 768, 14, 14)  # tokens as a square map
    classifier = param("fc.weight", lin, (10, 64, 1, 1))
    assert _node_shape(classifier, "conv", 8, 10) == (10, 64)  # a 1x1 conv classifier is a linear layer
    assert _node_shape(classifier, "conv", 5, 10) == (10, 64, 1, 1)  # elsewhere it stays a conv
    assert _node_shape(RawNode("MaxPool2DWithIndicesBackward0", kernel_size=(3, 3)), "max_pool", 3, 10) == (1, 1, 3, 3)
    assert _node_shape(RawNode("AddBackward0"), "sum", 3, 10) is None


def test_published_names_start_at_stem_or_pos_enc() -> None:
    assert _published_name("net.stem.0.weight") == "stem.0.weight"
    assert _published_name("encoder.pos_enc.weight") == "pos_enc.weight"
    assert _published_name("features.0.weight") == "features.0.weight"
