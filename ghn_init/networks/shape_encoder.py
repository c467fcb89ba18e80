"""Embeds each node's tensor shape: out/in channels and kernel height/width (GHN-2, Sec. 4.3)."""

from __future__ import annotations

import bisect
from typing import Optional, Sequence

import torch
import torch.nn as nn

from ..shapes import token_map_shape


def shape_to_4d(shape: Sequence[int]) -> tuple[int, int, int, int]:
    """1-3D shapes as (out, in, h, w); ViT tokens [1, 197, 768] become [1, 768, 14, 14]."""
    s = tuple(int(v) for v in shape)
    if len(s) == 1:
        s = (s[0], 1)
    if len(s) == 2:
        s = (s[0], s[1], 1, 1)
    if len(s) == 3:
        s = token_map_shape(s) or (s[0], s[1], s[2], 1)
    return s[:4]  # type: ignore[return-value]


def _nearest_lookup(values: list[int], upto: int) -> dict[int, int]:
    """value -> index of the nearest known value (ties: the smaller), for every value below ``upto``."""
    lookup = {v: i for i, v in enumerate(values)}
    for c in range(1, upto):
        if c not in lookup:
            right = bisect.bisect_left(values, c)
            left = right - 1
            if right >= len(values) or (left >= 0 and c - values[left] <= values[right] - c):
                lookup[c] = left
            else:
                lookup[c] = right
    return lookup


class ShapeEncoder(nn.Module):
    """Adds learned embeddings of the (quantized) tensor shape to each node embedding.

    Channel counts and kernel sizes are mapped to the grid the published GHNs were trained on;
    unseen sizes take the nearest grid value, sizes beyond the grid take the largest.
    """

    def __init__(self, hid: int, num_classes: int, max_shape: Sequence[int]):
        super().__init__()
        channels = sorted(
            {1, 3, num_classes} | set(range(8, 64, 8)) | set(range(64, 4096, 16)) | set(range(4096, 8193, 32))
        )
        spatial = sorted(set(range(1, max(12, max_shape[3]), 2)) | {14, 16})
        self.channels, self.spatial = channels, spatial
        self._channel_index = _nearest_lookup(channels, channels[-1])
        for c in range(4, 8):  # 4-7 channels count as 8, as in the published encoder
            self._channel_index[c] = self._channel_index[8]
        self._spatial_index = _nearest_lookup(spatial, spatial[-1])
        self._spatial_index[2] = self._spatial_index[3]
        self.embed_spatial = nn.Embedding(len(spatial) + 1, hid // 4)
        self.embed_channel = nn.Embedding(len(channels) + 1, hid // 4)

    def indices(self, shapes: Sequence[Optional[Sequence[int]]]) -> torch.Tensor:
        """(N, 4) embedding indices; nodes without a shape use the extra 'no shape' row."""
        n_ch, n_sp = len(self.channels), len(self.spatial)
        rows = []
        for shape in shapes:
            if shape is None:
                rows.append((n_ch, n_ch, n_sp, n_sp))
                continue
            s = shape_to_4d(shape)
            ch = [self._channel_index.get(c, n_ch - 1) for c in s[:2]]
            sp = [self._spatial_index.get(k, n_sp - 1) for k in s[2:]]
            rows.append((*ch, *sp))
        return torch.tensor(rows, dtype=torch.long).view(-1, 4)

    def forward(self, x: torch.Tensor, shape_index: torch.Tensor) -> torch.Tensor:
        shape_index = shape_index.to(x.device)
        embedded = torch.cat(
            (
                self.embed_channel(shape_index[:, 0]),
                self.embed_channel(shape_index[:, 1]),
                self.embed_spatial(shape_index[:, 2]),
                self.embed_spatial(shape_index[:, 3]),
            ),
            dim=1,
        )
        return x + embedded
