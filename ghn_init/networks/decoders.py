"""Decoders from node embeddings to max-sized parameter tensors (GHN-2 Sec. 4; GHN-3 Sec. 3)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class WeightDecoder(nn.Module):
    """Node embedding -> a (out, in, k, k) weight of at most ``max_shape``.

    An MLP expands the embedding to a (4*hid, k, k) map, a per-pixel MLP turns each pixel into
    out*in weights. GHN-3 takes the centre crop of the kernel grid for smaller kernels, GHN-2 the
    top-left crop. Classification layers get their own head over the centre pixel.
    """

    def __init__(self, hid: int, max_shape: tuple[int, int, int, int], num_classes: int, centre_crop: bool):
        super().__init__()
        self.max_shape = max_shape
        self.centre_crop = centre_crop
        out_ch, in_ch, k, _ = max_shape
        self.fc = nn.Sequential(nn.Linear(hid, hid * 4 * k * k), nn.ReLU())
        self.conv = nn.Sequential(
            nn.Linear(hid * 4, hid * 8), nn.ReLU(), nn.Linear(hid * 8, out_ch * in_ch), nn.Identity()
        )
        self.class_layer_predictor = nn.Sequential(nn.ReLU(), nn.Linear(out_ch, num_classes))

    def _crop(self, size: int) -> slice:
        k = self.max_shape[2]
        if not self.centre_crop:
            return slice(0, size)
        centre = k // 2
        return slice(max(0, centre - size // 2), centre + math.ceil(size / 2))

    def _expand(self, x: torch.Tensor, rows: slice, cols: slice) -> torch.Tensor:
        """``fc(x)`` as (n, 4*hid, k, k) maps, cropped to ``rows`` x ``cols``.

        Only the rows of ``fc`` that survive the crop are computed: a 1x1 kernel needs 1/k^2 of them.
        """
        n, k = x.shape[0], self.max_shape[2]
        linear = self.fc[0]
        if (rows.indices(k), cols.indices(k)) == ((0, k, 1), (0, k, 1)):
            return self.fc(x).view(n, -1, k, k)
        weight = linear.weight.view(-1, k, k, linear.in_features)[:, rows, cols]
        h, w = weight.shape[1:3]
        bias = linear.bias.view(-1, k, k)[:, rows, cols] if linear.bias is not None else None
        out = F.linear(x, weight.reshape(-1, linear.in_features), bias.reshape(-1) if bias is not None else None)
        return self.fc[1:](out).view(n, -1, h, w)

    def _per_pixel(self, x: torch.Tensor, out_rows: int, in_cols: int) -> torch.Tensor:
        """``conv`` (the per-pixel MLP) on (n, 4*hid, h, w) maps -> (n, out_rows, in_cols, h, w).

        Only the outputs that survive the channel crop are computed: the last layer's rows for
        output channels ``< out_rows`` and input channels ``< in_cols``. A depthwise kernel (one input
        channel) needs 1/64 of them, a stem convolution over 3 colour channels 3/64.
        """
        n, _, h, w = x.shape
        out_ch, in_ch = self.max_shape[:2]
        hidden = self.conv[1](self.conv[0](x.permute(0, 2, 3, 1)))
        last = self.conv[2]
        weight, bias = last.weight, last.bias
        if (out_rows, in_cols) != (out_ch, in_ch):
            weight = weight.view(out_ch, in_ch, -1)[:out_rows, :in_cols].reshape(out_rows * in_cols, -1)
            bias = bias.view(out_ch, in_ch)[:out_rows, :in_cols].reshape(-1) if bias is not None else None
        out = self.conv[3](F.linear(hidden, weight, bias))  # (n, h, w, out_rows * in_cols)
        return out.permute(0, 3, 1, 2).reshape(n, out_rows, in_cols, h, w)

    def forward(self, x: torch.Tensor, shape: tuple[int, ...], classifier: bool = False) -> torch.Tensor:
        n = x.shape[0]
        out_ch, in_ch = self.max_shape[:2]
        x = self._expand(x, self._crop(shape[2]), self._crop(shape[3]))
        h, w = x.shape[2:]
        # a classifier's head reads every output channel of the centre pixel; other kernels are cropped
        x = self._per_pixel(x, out_ch if classifier else min(shape[0], out_ch), min(shape[1], in_ch))
        x = x[:, :, :, : shape[2], : shape[3]]
        if min(shape[2:]) > min(h, w):  # kernels larger than the decoder's grid: upsample
            flat = x.reshape(n * x.shape[1], x.shape[2], h, w)
            x = F.interpolate(flat, size=tuple(shape[2:]), mode="bilinear").view(n, x.shape[1], x.shape[2], *shape[2:])
        if classifier:
            c = x.shape[-1] // 2
            return self.class_layer_predictor(x[:, :, :, c, c].permute(0, 2, 1)).permute(0, 2, 1)
        return x
