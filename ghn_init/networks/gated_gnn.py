"""GHN-2's message passing: a gated GNN that sweeps the DAG forward then backward (GHN-2, Eq. 3-4)."""

from __future__ import annotations

import torch
import torch.nn as nn

from .layers import MLP


class GatedGNN(nn.Module):
    """Each node, in topological order, aggregates messages from its predecessors (forward sweep)
    or successors (backward sweep) and updates its state with a shared GRU cell. With virtual
    edges, nodes further away send messages through a second MLP, scaled by 1/distance."""

    def __init__(self, hid: int, virtual_edges: bool = True):
        super().__init__()
        self.virtual_edges = virtual_edges
        self.mlp = MLP(hid, (hid // 2 if virtual_edges else hid, hid))
        if virtual_edges:
            self.mlp_ve = MLP(hid, (hid // 2, hid))
        self.gru = nn.GRUCell(hid, hid)

    def forward(self, x: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
        """x: (N, C) states of one graph; edges: (M, 3) rows (src, dst, distance), distance 1 = real."""
        n = x.shape[0]
        src, dst, dist = edges[:, 0], edges[:, 1], edges[:, 2]
        plans = []
        for forward in (True, False):
            receiver, sender = (dst, src) if forward else (src, dst)
            order = range(n) if forward else range(n - 1, -1, -1)
            by_node: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = [None] * n  # type: ignore[list-item]
            sort = torch.argsort(receiver, stable=True)
            counts = torch.bincount(receiver, minlength=n).tolist()
            start = 0
            for node in range(n):
                idx = sort[start : start + counts[node]]
                start += counts[node]
                d = dist[idx]
                by_node[node] = (sender[idx[d == 1]], sender[idx], d.to(x.dtype).view(-1, 1))
            plans.append((order, by_node))

        h = x.clone()  # updated in place, node by node; indexing copies keep autograd happy
        index = torch.arange(n, device=x.device).view(n, 1)
        for order, by_node in plans:
            for node in order:
                one_hop, all_hops, d = by_node[node]
                m = self.mlp(h[one_hop]).sum(0, keepdim=True)
                if self.virtual_edges:
                    m = m + (self.mlp_ve(h[all_hops]) / d).sum(0, keepdim=True)
                h[index[node]] = self.gru(m, h[index[node]]).to(h.dtype)
        return h
