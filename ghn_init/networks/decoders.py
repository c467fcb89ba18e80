"""Decoders from node embeddings to max-sized parameter tensors (GHN-2 Sec. 4; GHN-3 Sec. 3)."""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

# Weight crops a WeightDecoder keeps between inference calls (WeightDecoder._cropped): a model's groups use a few.
_CROPS_KEPT = 16


class Request(NamedTuple):
    """Node embeddings to decode in one :meth:`WeightDecoder.decode_needed` call, and what each one needs.

    Attributes:
        x: (n, hid) node embeddings that share a decoded ``shape``.
        shape: the decoded ``(out, in, h, w)`` size (as :meth:`WeightDecoder.forward` takes it).
        classifier: decode through the classification head.
        needs: per node, the ``(out channels, in channels)`` of the decoded block that will be used
            (at most ``min(shape[:2], max_shape[:2])``; a classifier's out channels are all ``max_shape[0]``).
    """

    x: torch.Tensor
    shape: tuple[int, ...]
    classifier: bool
    needs: Sequence[tuple[int, int]]


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
        self._crops: dict[Any, tuple[tuple, Any]] = {}  # see _cropped

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_crops"] = {}  # derived tensors: not pickled or deep-copied with the module
        return state

    def _cropped(self, key: Any, sources: tuple[Optional[torch.Tensor], ...], make: Callable[[], Any]) -> Any:
        """``make()``: a crop of the decoder's weights copied into a contiguous tensor, kept for later inference calls.

        Decoding a group copies the rows of the weights it uses: for a 7x7 kernel, 49 of the 256 kernel pixels of
        ``fc`` (3.2 MB for GHN-3-T), for 32 output channels half of the last layer (4 MB). The copies depend on the
        weights only, so with autograd off they are kept (at most :data:`_CROPS_KEPT`, under ``key``) and reused
        while every tensor of ``sources`` is unchanged: the same storage and version counter (an optimizer step or
        ``load_state_dict`` changes one of them). Inference tensors, which have no version counter, and autograd
        (training) always get a fresh copy.
        """
        live = [t for t in sources if t is not None]
        if torch.is_grad_enabled() or any(t.is_inference() for t in live):
            return make()
        stamp = tuple((t.data_ptr(), t._version) for t in live)
        hit = self._crops.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        value = make()
        if len(self._crops) >= _CROPS_KEPT:
            self._crops.clear()  # a plain dict, replaced wholesale: safe for concurrent inference calls
        self._crops[key] = (stamp, value)
        return value

    @property
    def last_layer_weights(self) -> int:
        """Weights of the last layer (``hid * 8`` -> ``out * in`` per kernel pixel): what decoding a group reads."""
        return self.conv[2].weight.numel()

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
        h, w = len(range(*rows.indices(k))), len(range(*cols.indices(k)))

        def crop() -> tuple[torch.Tensor, Optional[torch.Tensor]]:
            weight = linear.weight.view(-1, k, k, linear.in_features)[:, rows, cols].reshape(-1, linear.in_features)
            bias = linear.bias.view(-1, k, k)[:, rows, cols].reshape(-1) if linear.bias is not None else None
            return weight, bias

        key = ("fc", rows.indices(k), cols.indices(k))
        out = F.linear(x, *self._cropped(key, (linear.weight, linear.bias), crop))
        return self.fc[1:](out).view(n, -1, h, w)

    def _expand_rows(self, x: torch.Tensor, rows: slice, cols: slice) -> torch.Tensor:
        """:meth:`_expand` without copying the cropped rows of ``fc``'s weight (inference).

        One batched product per kernel row reads the weight where it lies (a strided view); for a 7x7
        crop of GHN-3-XL's 16x16 grid that saves a 115 MB copy per call.
        """
        n, k = x.shape[0], self.max_shape[2]
        linear = self.fc[0]
        r = range(*rows.indices(k))
        if (r, range(*cols.indices(k))) == (range(k), range(k)) or len(r) == 1:
            return self._expand(x, rows, cols)
        weight = linear.weight.view(-1, k, k, linear.in_features)
        channels = weight.shape[0]
        width = len(range(*cols.indices(k)))
        out = x.new_empty(n, channels, len(r), width)
        xt = x.t().expand(channels, -1, n)
        for j, row in enumerate(r):
            out[:, :, j] = torch.bmm(weight[:, row, cols], xt).permute(2, 0, 1)
        if linear.bias is not None:
            out += linear.bias.view(-1, k, k)[:, rows, cols]
        return self.fc[1:](out)

    def _last_layer(self, out_rows: int, in_cols: int) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The last layer's weight and bias rows for output channels ``< out_rows`` and input channels ``< in_cols``."""
        out_ch, in_ch = self.max_shape[:2]
        last = self.conv[2]
        weight, bias = last.weight, last.bias
        if (out_rows, in_cols) == (out_ch, in_ch):
            return weight, bias

        def crop() -> tuple[torch.Tensor, Optional[torch.Tensor]]:
            w = weight.view(out_ch, in_ch, -1)[:out_rows, :in_cols].reshape(out_rows * in_cols, -1)
            return w, bias.view(out_ch, in_ch)[:out_rows, :in_cols].reshape(-1) if bias is not None else None

        return self._cropped(("last", out_rows, in_cols), (weight, bias), crop)

    def _hidden(self, x: torch.Tensor) -> torch.Tensor:
        """The per-pixel MLP's hidden layer on (n, 4*hid, h, w) maps: (n, h, w, 8*hid)."""
        return self.conv[1](self.conv[0](x.permute(0, 2, 3, 1)))

    def _per_pixel(self, x: torch.Tensor, out_rows: int, in_cols: int) -> torch.Tensor:
        """``conv`` (the per-pixel MLP) on (n, 4*hid, h, w) maps -> (n, out_rows, in_cols, h, w).

        Only the outputs that survive the channel crop are computed: the last layer's rows for
        output channels ``< out_rows`` and input channels ``< in_cols``. A depthwise kernel (one input
        channel) needs 1/64 of them, a stem convolution over 3 colour channels 3/64.
        """
        n, _, h, w = x.shape
        out = self.conv[3](F.linear(self._hidden(x), *self._last_layer(out_rows, in_cols)))  # (n, h, w, rows * cols)
        return out.permute(0, 3, 1, 2).reshape(n, out_rows, in_cols, h, w)

    def _last_layer_needed(self, hidden: torch.Tensor, spans: Sequence[tuple[int, int, int]]) -> list[torch.Tensor]:
        """The per-pixel MLP's last layer for rows of ``hidden``, only at the outputs each row needs.

        Args:
            hidden: (M, 8*hid) hidden activations, one row per (node, kernel pixel).
            spans: per node, ``(rows, out_rows, in_cols)``: its next ``rows`` rows of ``hidden`` need the
                outputs of output channels ``< out_rows`` and input channels ``< in_cols``.

        Returns:
            Per span, a (out_rows, in_cols, rows) tensor: ``conv[2](hidden)`` at those outputs.

        The (out, in) grid is cut at every distinct ``out_rows`` and ``in_cols``; each block of the
        weight is read once, as a strided view (one small matrix product per output channel, no copy
        of the weight), for the rows of all spans that need it. Each output is the same dot product
        as in ``F.linear`` (only the order of its float32 sums may differ).
        """
        last = self.conv[2]
        out_ch, in_ch = self.max_shape[:2]
        weight = last.weight.view(out_ch, in_ch, -1)
        bias = last.bias.view(out_ch, in_ch, 1) if last.bias is not None else None
        starts, row = [], 0
        for rows, _, _ in spans:
            starts.append(row)
            row += rows
        outs = [hidden.new_empty(o, i, rows) for rows, o, i in spans]
        ht = hidden.t().contiguous()  # (8*hid, M): row-major right operand, the faster layout for small M
        o_cuts = sorted({o for _, o, _ in spans})
        i_cuts = sorted({i for _, _, i in spans})
        for a, o1 in enumerate(o_cuts):
            o0 = o_cuts[a - 1] if a else 0
            for b, i1 in enumerate(i_cuts):
                i0 = i_cuts[b - 1] if b else 0
                members = [j for j, (_, o, i) in enumerate(spans) if o >= o1 and i >= i1]
                if not members:
                    continue
                if len(members) == len(spans):
                    h = ht
                else:
                    idx = torch.cat([torch.arange(starts[j], starts[j] + spans[j][0]) for j in members])
                    h = ht.index_select(1, idx.to(ht.device))
                m = h.shape[1]
                block = weight[o0:o1, i0:i1]  # (do, di, 8*hid): a view, each (di, 8*hid) slice contiguous
                out = torch.bmm(block, h.expand(o1 - o0, -1, m))
                if bias is not None:
                    out += bias[o0:o1, i0:i1]
                col = 0
                for j in members:
                    rows = spans[j][0]
                    outs[j][o0:o1, i0:i1] = out[:, :, col : col + rows]
                    col += rows
        return outs

    def decode_needed(self, requests: Sequence[Request]) -> list[list[torch.Tensor]]:
        """Decode several batches of nodes, each node only at the channels it needs.

        Gives what :meth:`forward` gives, cropped to each node's ``needs``
        (``forward(x, shape, classifier)[j][: needs[j][0], : needs[j][1]]``), within float32 rounding,
        but computes only those channels (the rest would be cropped away when fitting the tensor) and
        reads the last layer's weight once for all requests, which is most of the decoder's time for a
        wide GHN: GHN-3-XL's last layer is 3072 x 147456. Used for inference (no autograd graph needed);
        training calls :meth:`forward`.

        Args:
            requests: the batches to decode (:class:`Request`).

        Returns:
            Per request, per node, its decoded (out, in, h, w) tensor, out and in as in ``needs``
            (a classifier's: (num_classes, in)).
        """
        hiddens, spans, sizes = [], [], []
        for r in requests:
            x = self._expand_rows(r.x, self._crop(r.shape[2]), self._crop(r.shape[3]))
            n, _, h, w = x.shape
            hiddens.append(self._hidden(x).reshape(n * h * w, -1))
            spans += [(h * w, o, i) for o, i in r.needs]
            sizes.append((h, w))
        hidden = hiddens[0] if len(hiddens) == 1 else torch.cat(hiddens)
        flat = iter(self._last_layer_needed(hidden, spans))
        results = []
        for r, (h, w) in zip(requests, sizes, strict=True):
            decoded = []
            for o, i in r.needs:
                y = self.conv[3](next(flat)).view(1, o, i, h, w)
                decoded.append(self._finish(y, r.shape, r.classifier)[0])
            results.append(decoded)
        return results

    def _channels(
        self, shape: tuple[int, ...], classifier: bool, channels: Optional[tuple[int, int]]
    ) -> tuple[int, int]:
        """The (out, in) channels :meth:`forward` computes for ``shape``: ``shape[:2]`` capped at ``max_shape[:2]``
        (all output channels for a classifier, whose head mixes them), then at ``channels``."""
        out_ch, in_ch = self.max_shape[:2]
        out_rows, in_cols = out_ch if classifier else min(shape[0], out_ch), min(shape[1], in_ch)
        if channels is not None:
            out_rows = out_rows if classifier else min(out_rows, channels[0])
            in_cols = min(in_cols, channels[1])
        return out_rows, in_cols

    def _finish(self, x: torch.Tensor, shape: tuple[int, ...], classifier: bool) -> torch.Tensor:
        """(n, out, in, h, w) decoded kernels -> the decoded ``shape``: crop, upsample kernels larger than the grid,
        or the classification head over the centre pixel."""
        n, h, w = x.shape[0], x.shape[3], x.shape[4]
        x = x[:, :, :, : shape[2], : shape[3]]
        if min(shape[2:]) > min(h, w):  # kernels larger than the decoder's grid: upsample
            flat = x.reshape(n * x.shape[1], x.shape[2], h, w)
            x = F.interpolate(flat, size=tuple(shape[2:]), mode="bilinear").view(n, x.shape[1], x.shape[2], *shape[2:])
        if classifier:
            c = x.shape[-1] // 2
            return self.class_layer_predictor(x[:, :, :, c, c].permute(0, 2, 1)).permute(0, 2, 1)
        return x

    def forward(
        self,
        x: torch.Tensor,
        shape: tuple[int, ...],
        classifier: bool = False,
        channels: Optional[tuple[int, int]] = None,
    ) -> torch.Tensor:
        """Decode node embeddings ``x`` (n, hid) into (n, out, in, h, w) weights of the decoded ``shape``.

        ``out`` and ``in`` are ``shape[:2]`` capped at ``max_shape[:2]`` (a classifier: (num_classes, in)).
        With ``channels = (o, i)``, only output channels ``< o`` and input channels ``< i`` are computed
        (``out``/``in`` become at most ``o``/``i``; a classifier's output channels all feed its head and
        are kept): the same values as the full decode cropped there, within float32 rounding, for the
        work of the kept channels only (``GHN.forward`` passes what the group's tensors read).
        """
        x = self._expand(x, self._crop(shape[2]), self._crop(shape[3]))
        return self._finish(self._per_pixel(x, *self._channels(shape, classifier, channels)), shape, classifier)

    def forward_batched(
        self, calls: Sequence[tuple[torch.Tensor, tuple[int, ...], bool, Optional[tuple[int, int]]]]
    ) -> list[torch.Tensor]:
        """``[self(x, shape, classifier, channels) for x, shape, classifier, channels in calls]``, with one product
        of the last layer for all calls that compute the same channels.

        The last layer (``8*hid`` -> ``out*in`` per kernel pixel; 512 x 4096 for GHN-3-T) is most of a decode's
        weight reads, and a product with a few rows costs nearly as much as one with dozens (MKL's small-``M``
        kernels): ConvNeXt-T's 1x1 and 2x2 weight groups (36 and 12 rows) took 1.2 ms each, together 1.4 ms.
        Every output is the same dot product as in :meth:`forward` (only the order of its float32 sums may differ).
        Used for inference (``GHN.forward`` with autograd off).

        Args:
            calls: per call, the arguments of :meth:`forward`.

        Returns:
            Per call, what :meth:`forward` returns.
        """
        hiddens, layouts = [], []
        by_channels: dict[tuple[int, int], list[int]] = {}
        for j, (x, shape, classifier, channels) in enumerate(calls):
            hidden = self._hidden(self._expand(x, self._crop(shape[2]), self._crop(shape[3])))
            hiddens.append(hidden.reshape(-1, hidden.shape[-1]))
            layouts.append(hidden.shape[:3])
            by_channels.setdefault(self._channels(shape, classifier, channels), []).append(j)
        outs: list[Optional[torch.Tensor]] = [None] * len(calls)
        for (out_rows, in_cols), members in by_channels.items():
            rows = hiddens[members[0]] if len(members) == 1 else torch.cat([hiddens[j] for j in members])
            y = self.conv[3](F.linear(rows, *self._last_layer(out_rows, in_cols)))
            for j, part in zip(members, y.split([hiddens[j].shape[0] for j in members]), strict=True):
                n, h, w = layouts[j]
                x = part.view(n, h, w, -1).permute(0, 3, 1, 2).reshape(n, out_rows, in_cols, h, w)
                outs[j] = self._finish(x, calls[j][1], calls[j][2])
        return outs  # type: ignore[return-value]
