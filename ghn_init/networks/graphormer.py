"""GHN-3's message passing: Graphormer layers over the dense graph (GHN-3, Sec. 3)."""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn

MAX_DEGREE = 100
MAX_INPUT_DISTANCE = 1000
MAX_EDGE_VALUE = 257  # distances up to 255, offset by 2 to tell forward and backward edges apart


def sinusoidal_table(rows: int, dim: int) -> torch.Tensor:
    """Transformer positional table (row 0 zero); the published edge embeddings start from it."""
    position = torch.arange(rows).unsqueeze(1)
    freq = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
    table = torch.zeros(rows, dim)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq)
    table[0] = 0
    return table


class EdgeEmbedding(nn.Module):
    def __init__(self, hid: int, rows: int = MAX_EDGE_VALUE):
        super().__init__()
        self.embed = nn.Embedding(rows, hid)
        with torch.no_grad():
            self.embed.weight.copy_(sinusoidal_table(rows, hid))


class EdgeAwareAttention(nn.Module):
    """Multi-head self-attention whose logits get a learned bias per (forward, backward) edge value.

    Only the first layer embeds edges; later layers reuse its per-head bias. The bias depends only on
    the pair of edge values, so it is computed once per distinct pair and gathered, which gives the
    same numbers as embedding all N*N pairs with memory O(N*N*heads) instead of O(N*N*hid).
    """

    def __init__(self, dim: int, heads: int, embeds_edges: bool):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.to_qkv = nn.Linear(dim, dim * 3, bias=False)
        self.to_out = nn.Sequential(nn.Linear(dim, dim), nn.Identity())
        if embeds_edges:
            self.edge_embed = EdgeEmbedding(dim)
            self.proj_e = nn.Sequential(nn.Linear(2 * dim, dim), nn.ReLU(), nn.Linear(dim, heads))

    def edge_bias(self, edges: torch.Tensor) -> torch.Tensor:
        """edges: (B, N, N) distances -> (B, heads, N, N) attention bias."""
        fw = edges + 2
        bw = edges.transpose(1, 2) + 2
        pair = fw * MAX_EDGE_VALUE + bw
        # torch.unique(pair, return_inverse=True) without sorting N*N values: mark the pairs present in
        # a table of all possible pairs; its nonzero entries are the sorted distinct values
        present = torch.zeros(int(pair.max()) + 1, dtype=torch.bool, device=pair.device)
        present[pair.reshape(-1)] = True
        values = present.nonzero().squeeze(1)
        inverse = (torch.cumsum(present, 0) - 1)[pair]
        table = torch.cat(
            (self.edge_embed.embed(values // MAX_EDGE_VALUE), self.edge_embed.embed(values % MAX_EDGE_VALUE)), -1
        )
        bias = self.proj_e(table)  # (distinct pairs, heads)
        # gathered head-major, so the (B, heads, N, N) bias every layer adds is contiguous (a strided one made
        # each layer's add 4x slower)
        heads = bias.t().contiguous()  # (heads, distinct pairs): index_select reads it 6x faster than bias[inverse]
        return heads.index_select(1, inverse.reshape(-1)).view(-1, *inverse.shape).transpose(0, 1).contiguous()

    def forward(self, x: torch.Tensor, bias: Optional[torch.Tensor], mask: Optional[torch.Tensor]) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.to_qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        # in place on the fresh logits (autograd keeps q and k for the product, not its output): no temporaries
        attn = (q @ k.transpose(-2, -1)).mul_(self.scale)
        if bias is not None:
            attn.add_(bias)
        if mask is not None:
            attn.masked_fill_(~mask.unsqueeze(1), -(2.0**15))
        x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, c)
        return self.to_out(x)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Identity(), nn.Linear(hidden, dim), nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class GraphormerLayer(nn.Module):
    """Pre-norm Transformer layer. The first layer also adds degree and input-distance embeddings
    to the nodes (Graphormer's centrality encoding) and turns edge distances into attention bias."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int, first: bool):
        super().__init__()
        self.first = first
        self.ln1 = nn.LayerNorm(dim)
        self.attn = EdgeAwareAttention(dim, heads, embeds_edges=first)
        self.ln2 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, dim * mlp_ratio)
        if first:
            self.centrality_embed_in = nn.Embedding(MAX_DEGREE + 1, dim)
            self.centrality_embed_out = nn.Embedding(MAX_DEGREE + 1, dim)
            self.input_dist_embed = nn.Embedding(MAX_INPUT_DISTANCE + 1, dim)

    def forward(
        self, x: torch.Tensor, edges: torch.Tensor, mask: Optional[torch.Tensor], bias: Optional[torch.Tensor]
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        if self.first:
            real = (edges == 1).long()
            x = x + self.centrality_embed_in(real.sum(1).clamp(0, MAX_DEGREE))
            x = x + self.centrality_embed_out(real.sum(2).clamp(0, MAX_DEGREE))
            x = x + self.input_dist_embed(edges[:, 0, :].clamp(0, MAX_INPUT_DISTANCE))  # node 0 is the input
            if mask is not None:
                x = x * mask[:, :, :1]
            bias = self.attn.edge_bias(edges)
        x = x + self.attn(self.ln1(x), bias, mask)
        x = x + self.ff(self.ln2(x))
        return x, bias


class Graphormer(nn.ModuleList):
    """Stack of GraphormerLayers, stored as ``gnn.0, gnn.1, ...`` like the published files."""

    def __init__(self, dim: int, heads: int, layers: int, mlp_ratio: int = 4):
        super().__init__([GraphormerLayer(dim, heads, mlp_ratio, first=i == 0) for i in range(layers)])

    def forward(self, x: torch.Tensor, edges: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x: (B, N, C); edges: (B, N, N) distances (0 = none); mask: (B, N, N) valid pairs."""
        bias = None
        for layer in self:
            x, bias = layer(x, edges, mask, bias)
        return x
