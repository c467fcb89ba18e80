"""The computational graph a GHN reads: typed nodes, real edges and virtual edges."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
import torch.nn as nn

from .primitives import PRIMITIVE_INDEX

VIRTUAL_EDGE_CUTOFF = 50


@dataclass
class Node:
    """A graph node. Parameter nodes carry the parameter's qualified name and owning module."""

    name: str
    type: str
    shape: Optional[tuple[int, ...]] = None  # the shape the GHN is told (may differ from the tensor's)
    module_name: Optional[str] = None
    module: Optional[nn.Module] = field(default=None, repr=False, compare=False)
    is_param: bool = False
    published_name: str = ""  # the name the published builder matched parameters by (see builder)

    def __post_init__(self) -> None:
        self.published_name = self.published_name or self.name


@dataclass
class Graph:
    """Nodes in topological order (node 0 is the network input), real edges and virtual edges.

    Virtual edges join every pair of nodes linked by a shortest directed path of length
    2..``cutoff``; their weight is that length (GHN-2, Sec. 4.1).
    """

    nodes: list[Node]
    edges: list[tuple[int, int]]
    cutoff: int = VIRTUAL_EDGE_CUTOFF
    tracer: str = "autograd-meta"
    notes: list[str] = field(default_factory=list)
    _distances: Optional[dict[tuple[int, int], int]] = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def distances(self) -> dict[tuple[int, int], int]:
        """Shortest-path length for every ordered pair joined by a path of length 1..cutoff."""
        if self._distances is None:
            self._distances = shortest_paths(len(self.nodes), self.edges, self.cutoff)
        return self._distances

    @property
    def virtual_edges(self) -> dict[tuple[int, int], int]:
        return {pair: d for pair, d in self.distances.items() if d > 1}

    def node_types(self) -> torch.Tensor:
        return torch.tensor([PRIMITIVE_INDEX[n.type] for n in self.nodes], dtype=torch.long)

    def dense_adjacency(self, device: Optional[torch.device] = None) -> torch.Tensor:
        """(N, N) long matrix: 1 for real edges, d for virtual edges, 0 elsewhere."""
        n = len(self.nodes)
        adj = torch.zeros(n, n, dtype=torch.long)
        if self.distances:
            pairs = torch.tensor(list(self.distances.keys()), dtype=torch.long)
            adj[pairs[:, 0], pairs[:, 1]] = torch.tensor(list(self.distances.values()), dtype=torch.long)
        return adj.to(device) if device is not None else adj

    def edge_list(self) -> torch.Tensor:
        """(M, 3) long tensor of (src, dst, weight) sorted row-major, real and virtual edges together."""
        items = sorted(self.distances.items())
        if not items:
            return torch.zeros(0, 3, dtype=torch.long)
        return torch.tensor([(s, d, w) for (s, d), w in items], dtype=torch.long)

    def to_dict(self) -> dict[str, Any]:
        """The reference fixture format: nodes, real edges and a virtual-edge summary."""
        ve = self.virtual_edges
        return {
            "nodes": [
                {
                    "name": n.name,
                    "type": n.type,
                    "shape": list(n.shape) if n.shape is not None else None,
                    "module": n.module_name,
                }
                for n in self.nodes
            ],
            "edges": [[s, d, 1] for s, d in sorted(self.edges)],
            "virtual_edges": {"cutoff": self.cutoff, "count": len(ve), "weight_sum": sum(ve.values())},
        }

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for n in self.nodes:
            counts[n.type] = counts.get(n.type, 0) + 1
        kinds = ", ".join(f"{k}={v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
        return f"Graph({len(self.nodes)} nodes, {len(self.edges)} edges, {len(self.virtual_edges)} virtual; {kinds})"


def shortest_paths(n: int, edges: list[tuple[int, int]], cutoff: int) -> dict[tuple[int, int], int]:
    """Breadth-first search from every node, stopping at ``cutoff`` hops."""
    succ: list[list[int]] = [[] for _ in range(n)]
    for s, d in edges:
        succ[s].append(d)
    out: dict[tuple[int, int], int] = {}
    for src in range(n):
        depth = {src: 0}
        frontier = deque([src])
        while frontier:
            u = frontier.popleft()
            du = depth[u]
            if du == cutoff:
                continue
            for v in succ[u]:
                if v not in depth:
                    depth[v] = du + 1
                    out[(src, v)] = du + 1
                    frontier.append(v)
    return out
