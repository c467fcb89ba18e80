"""The computational graph a GHN reads: typed nodes, real edges and virtual edges."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn

from ..constants import VIRTUAL_EDGE_CUTOFF
from .primitives import PRIMITIVE_INDEX


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
    recorded: frozenset[str] = frozenset()  # parameters the recorded forward pass used (graph node or not)
    executed: frozenset[str] = frozenset()  # parameters of the modules the recorded forward pass called
    _matrix: Optional[torch.Tensor] = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def distance_matrix(self) -> torch.Tensor:
        """(N, N) int16 matrix: the shortest-path length from row to column up to ``cutoff``, else 0."""
        if self._matrix is None:
            self._matrix = distance_matrix(len(self.nodes), self.edges, self.cutoff)
        return self._matrix

    @property
    def distances(self) -> dict[tuple[int, int], int]:
        """Shortest-path length for every ordered pair joined by a path of length 1..cutoff."""
        return _pairs(self.distance_matrix, 1)

    @property
    def virtual_edges(self) -> dict[tuple[int, int], int]:
        return _pairs(self.distance_matrix, 2)

    def node_types(self) -> torch.Tensor:
        return torch.tensor([PRIMITIVE_INDEX[n.type] for n in self.nodes], dtype=torch.long)

    def dense_adjacency(self, device: Optional[torch.device] = None) -> torch.Tensor:
        """(N, N) long matrix: 1 for real edges, d for virtual edges, 0 elsewhere."""
        adj = self.distance_matrix.long()
        return adj.to(device) if device is not None else adj

    def edge_list(self) -> torch.Tensor:
        """(M, 3) long tensor of (src, dst, weight) sorted row-major, real and virtual edges together."""
        m = self.distance_matrix
        pairs = torch.nonzero(m)  # row-major order
        return torch.cat((pairs, m[pairs[:, 0], pairs[:, 1]].long().unsqueeze(1)), dim=1)

    def to_dict(self) -> dict[str, Any]:
        """The reference fixture format: nodes, real edges and a virtual-edge summary."""
        m = self.distance_matrix
        virtual = m[m > 1].long()
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
            "virtual_edges": {"cutoff": self.cutoff, "count": int(virtual.numel()), "weight_sum": int(virtual.sum())},
        }

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for n in self.nodes:
            counts[n.type] = counts.get(n.type, 0) + 1
        kinds = ", ".join(f"{k}={v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
        virtual = int((self.distance_matrix > 1).sum())
        return f"Graph({len(self.nodes)} nodes, {len(self.edges)} edges, {virtual} virtual; {kinds})"


def _pairs(matrix: torch.Tensor, at_least: int) -> dict[tuple[int, int], int]:
    pairs = torch.nonzero(matrix >= at_least)
    values = matrix[pairs[:, 0], pairs[:, 1]].tolist()
    return dict(zip(map(tuple, pairs.tolist()), values, strict=True))


def distance_matrix(n: int, edges: Sequence[tuple[int, int]], cutoff: int) -> torch.Tensor:
    """Breadth-first search from all nodes at once, stopping at ``cutoff`` hops.

    Returns an (n, n) int16 matrix of shortest-path lengths (0: no path within ``cutoff``, and on
    the diagonal). Each step expands every (source, node) pair of the current frontier along the
    node's out-edges with array operations, so the cost is proportional to the number of pairs
    found times the out-degree rather than n Python-level searches. Duplicate pairs of a step are
    dropped without sorting (each pair keeps the last position that wrote it into a scratch
    array), and the loop runs on NumPy arrays: with up to ``cutoff`` steps of about fifteen small
    array operations each, per-call overhead is most of the cost, and NumPy's is a fraction of
    PyTorch's.
    """
    dist = np.zeros(n * n, dtype=np.int16)
    if n == 0 or not len(edges) or cutoff < 1:
        return torch.from_numpy(dist.reshape(n, n))
    e = np.asarray(list(edges), dtype=np.int64).reshape(-1, 2)
    e = e[e[:, 0] != e[:, 1]]  # a self loop never shortens a path
    dst = e[np.argsort(e[:, 0], kind="stable"), 1]
    degree = np.bincount(e[:, 0], minlength=n)
    first = np.cumsum(degree) - degree  # where each node's out-edges start in dst
    last_writer = np.empty(n * n, dtype=np.int64)  # scratch for dropping duplicate pairs
    src = node = np.arange(n)
    for d in range(1, cutoff + 1):
        k = degree[node]
        total = int(k.sum())
        if total == 0:
            break
        pair_start = np.cumsum(k) - k
        v = dst[np.repeat(first[node] - pair_start, k) + np.arange(total)]
        s = np.repeat(src, k)
        key = (s * n + v)[(dist[s * n + v] == 0) & (s != v)]
        if key.size == 0:
            break
        position = np.arange(key.size)
        last_writer[key] = position
        key = key[last_writer[key] == position]  # each new pair once
        dist[key] = d
        src, node = key // n, key % n
    return torch.from_numpy(dist.reshape(n, n))


def shortest_paths(n: int, edges: Sequence[tuple[int, int]], cutoff: int) -> dict[tuple[int, int], int]:
    """{(src, dst): length} for every pair joined by a directed path of 1..``cutoff`` hops."""
    return _pairs(distance_matrix(n, edges, cutoff), 1)
