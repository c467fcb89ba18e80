"""The Graph HyperNetwork: node embeddings from a graph, then decoders to parameter tensors."""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import torch
import torch.nn as nn

from ..graph.graph import Graph
from ..graph.primitives import PRIMITIVES
from .config import GHN2, GHNConfig
from .decoders import WeightDecoder
from .gated_gnn import GatedGNN
from .graphormer import Graphormer
from .layers import MLP, maybe_squeeze_conv1x1
from .shape_encoder import ShapeEncoder

# Published GHN-3 files keep these tables at the top level; the published loader moves them into
# the first Graphormer layer, which is where our state dict keeps them.
_GRAPHORMER_TABLES = ("centrality_embed_in", "centrality_embed_out", "input_dist_embed")


class GHN(nn.Module):
    """GHN-2 (gated GNN) or GHN-3 (Graphormer), with parameter names of the published checkpoints."""

    def __init__(self, config: GHNConfig):
        super().__init__()
        self.config = config
        hid, max_shape = config.hid, config.max_shape
        if config.layernorm:
            self.ln = nn.LayerNorm(hid)
        self.embed = nn.Embedding(len(PRIMITIVES), hid)
        self.shape_enc = ShapeEncoder(hid, config.num_classes, max_shape)
        if config.kind == GHN2:
            self.gnn: nn.Module = GatedGNN(hid, virtual_edges=config.virtual_edges)
        else:
            self.gnn = Graphormer(hid, config.heads, config.layers, config.mlp_ratio)
        self.decoder = WeightDecoder(hid, max_shape, config.num_classes, centre_crop=config.kind != GHN2)
        max_ch = max(max_shape[:2])
        self.decoder_1d = MLP(hid, (hid * 2, 2 * max_ch), last_activation=False)
        self.bias_class = nn.Sequential(nn.ReLU(), nn.Linear(max_ch, config.num_classes))

    @property
    def is_ghn2(self) -> bool:
        return self.config.kind == GHN2

    @property
    def virtual_edge_cutoff(self) -> int:
        return 50 if self.config.virtual_edges else 1

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def embed_nodes(self, graphs: Sequence[Graph], shapes: Sequence[Sequence[Optional[Sequence[int]]]]) -> list[torch.Tensor]:
        """Node embeddings (N_i, hid) for each graph; ``shapes`` are the shapes the GHN is told per node."""
        device = self.embed.weight.device
        xs = []
        for graph, node_shapes in zip(graphs, shapes):
            x = self.embed(graph.node_types().to(device))
            xs.append(self.shape_enc(x, self.shape_enc.indices(node_shapes)))
        if self.is_ghn2:
            xs = [self.gnn(x, graph.edge_list().to(device)) for x, graph in zip(xs, graphs)]
        else:
            xs = self._graphormer(xs, graphs)
        if self.config.layernorm:
            xs = [self.ln(x) for x in xs]
        return xs

    def _graphormer(self, xs: list[torch.Tensor], graphs: Sequence[Graph]) -> list[torch.Tensor]:
        device = xs[0].device
        sizes = [x.shape[0] for x in xs]
        n = max(sizes)
        x = torch.zeros(len(xs), n, xs[0].shape[1], device=device, dtype=xs[0].dtype)
        edges = torch.zeros(len(xs), n, n, dtype=torch.long, device=device)
        valid = torch.zeros(len(xs), n, dtype=torch.bool, device=device)
        for b, (xi, graph) in enumerate(zip(xs, graphs)):
            x[b, : sizes[b]] = xi
            edges[b, : sizes[b], : sizes[b]] = graph.dense_adjacency(device)
            valid[b, : sizes[b]] = True
        mask = valid.unsqueeze(2) & valid.unsqueeze(1)
        out = self.gnn(x, edges, mask)
        return [out[b, : sizes[b]] for b in range(len(xs))]

    def load_published_state_dict(
        self, state_dict: Mapping[str, torch.Tensor], strict: bool = True, assign: bool = False
    ) -> Any:
        """Load a published (ppuda or GHN-3 Hub) state dict, adapting its layout to ours.

        With ``assign=True`` the tensors are taken as they are (a GHN built on the meta device).
        """
        own = self.state_dict()
        adapted = {}
        for key, value in state_dict.items():
            if key.split(".")[0] in _GRAPHORMER_TABLES:
                key = "gnn.0." + key
            # a fresh, aligned copy: kernels then give bit-identical results whatever file the weights came from
            adapted[key] = maybe_squeeze_conv1x1(value, own.get(key)).clone(memory_format=torch.contiguous_format)
        return self.load_state_dict(adapted, strict=strict, assign=assign)
