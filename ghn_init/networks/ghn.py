"""The Graph HyperNetwork: node embeddings from a graph, then decoders to parameter tensors."""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import torch
import torch.nn as nn

from ..constants import VIRTUAL_EDGE_CUTOFF
from ..decode import fan_in_factor, fit_to_shape, fit_vector_group
from ..errors import PredictionError
from ..graph.graph import Graph
from ..graph.primitives import PRIMITIVES
from ..planning import DecoderKind, Plan, Target
from ..tiling import Tiled
from .config import GHN2, GHNConfig
from .decoders import Request, WeightDecoder
from .gated_gnn import GatedGNN
from .graphormer import Graphormer
from .layers import MLP, maybe_squeeze_conv1x1
from .shape_encoder import ShapeEncoder

# Published GHN-3 files keep these tables at the top level; the published loader moves them into
# the first Graphormer layer, which is where our state dict keeps them.
_GRAPHORMER_TABLES = ("centrality_embed_in", "centrality_embed_out", "input_dist_embed")


# Decoded elements held at once by the inference path of GHN.forward (128 MB of float32); one tensor may exceed it.
_CHUNK = 1 << 25
# The inference path (decode only the channels each tensor uses) pays when the weight decoder's last layer is large
# (GHN-3-XL/m16: 3072 x 384*384, 453M weights; resnet50 apply 2.2 -> 1.0 s of CPU), not for small GHNs, whose last
# layer (4096 x 512 for GHN-3-T/m8 and the bundled GHN, 2M weights) one matmul per group reads faster than the
# per-block calls: with GHN-3-T/m8 it made efficientnet_b7's apply 216 -> 270 ms and mobilenet_v3_large's
# 39 -> 47 ms (1 thread, same sitting). Used from this many last-layer weights on.
_NEEDED_MIN_WEIGHTS = 1 << 24
_WEIGHT_KINDS = (DecoderKind.WEIGHT, DecoderKind.CLASSIFIER)


def _needs(kind: DecoderKind, shape: tuple[int, ...], slot_shape: tuple[int, ...], max_shape: Sequence[int]) -> tuple:
    """(out, in, ...) of a weight-decoder output that fitting it to ``slot_shape`` reads (see ``fit_to_shape``).

    The decoder emits at most ``max_shape[:2]`` channels (all ``max_shape[0]`` for a classifier, whose
    head mixes them); fitting crops them to the tensor's own channels and tiles from there. Token
    embeddings (3-D) keep the whole decoded block. The trailing sizes only weigh the chunk size.
    """
    out_ch = max_shape[0] if kind is DecoderKind.CLASSIFIER else min(shape[0], max_shape[0])
    in_ch = min(shape[1], max_shape[1])
    spatial = tuple(shape[2:]) if len(shape) > 2 else (1,)
    if kind is DecoderKind.CLASSIFIER or len(slot_shape) == 3:
        return (out_ch, in_ch, *spatial)
    return (min(slot_shape[0], out_ch), min(slot_shape[1], in_ch), *spatial)


# dtypes in which one multiply by a tensor of factors equals a multiply by each Python float (PyTorch rounds the
# scalar to the tensor's dtype either way); in float16/bfloat16 a scalar is applied in float32
_EXACT_SCALING = (torch.float32, torch.float64)


def _scale_group(decoded: torch.Tensor, shapes: Sequence[Sequence[int]]) -> torch.Tensor:
    """A decoded weight group (one row per member), each row multiplied in place by its tensor's fan-in factor
    (:func:`~ghn_init.decode.fan_in_factor`): what ``fit_to_shape(..., is_weight=True)`` does to each member's crop,
    in one multiply for the group instead of one per tensor (inference only: ``decoded`` is overwritten)."""
    factors = [fan_in_factor(s) for s in shapes]
    column = torch.tensor([1.0 if f is None else f for f in factors], dtype=decoded.dtype, device=decoded.device)
    return decoded.mul_(column.view(-1, *(1,) * (decoded.dim() - 1)))


def _check_finite(decoded: torch.Tensor, count: int, kind: DecoderKind, shape: tuple[int, ...]) -> None:
    """Raise :class:`PredictionError` if ``decoded`` holds a NaN or an infinity.

    One sum (a NaN or an infinity makes it non-finite; 1.6x faster than ``aminmax``) instead of
    ``isfinite(decoded).all()``'s three passes and a boolean temporary of the tensor's size. Only when the
    sum is not finite, which finite values can also give by overflowing, one min/max pass decides (NaN
    propagates to both, +-inf to one).
    """
    if decoded.numel() == 0 or bool(torch.isfinite(decoded.sum())):
        return
    lo, hi = torch.aminmax(decoded)
    if not bool(torch.isfinite(lo) & torch.isfinite(hi)):
        raise PredictionError(
            f"the GHN predicted non-finite values for {count} tensor(s) of group {kind.value} {shape}; "
            "the model was not changed (is the GHN checkpoint corrupted?)"
        )


#: ``sink(graph index, tensor name, tensor)``: receives each predicted tensor in a dry run (see :meth:`GHN.forward`).
Sink = Callable[[int, str, torch.Tensor], None]


class GHN(nn.Module):
    """GHN-2 (gated GNN) or GHN-3 (Graphormer), with parameter names of the published checkpoints.

    Calling it, ``ghn(graphs, plans)``, predicts the tensors of each graph's model (:meth:`forward`).

    Example:
        >>> import ghn_init, torchvision
        >>> ghn = ghn_init.load_ghn("bundled")
        >>> model = torchvision.models.resnet18()
        >>> graph = ghn_init.trace(model, virtual_edge_cutoff=ghn.virtual_edge_cutoff)
        >>> tensors = ghn([graph], [ghn_init.plan(graph, model, ghn.config.max_shape)])[0]
        >>> tuple(tensors["conv1.weight"].shape)
        (64, 3, 7, 7)
    """

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
        """The ``virtual_edge_cutoff`` to trace graphs with for this GHN (1: no virtual edges)."""
        return VIRTUAL_EDGE_CUTOFF if self.config.virtual_edges else 1

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def embed_nodes(
        self, graphs: Sequence[Graph], shapes: Sequence[Sequence[Optional[Sequence[int]]]]
    ) -> list[torch.Tensor]:
        """Node embeddings (N_i, hid) for each graph; ``shapes`` are the shapes the GHN is told per node."""
        device = self.embed.weight.device
        xs = []
        for graph, node_shapes in zip(graphs, shapes, strict=True):
            x = self.embed(graph.node_types().to(device))
            xs.append(self.shape_enc(x, self.shape_enc.indices(node_shapes)))
        if self.is_ghn2:
            xs = [self.gnn(x, graph.edge_list().to(device)) for x, graph in zip(xs, graphs, strict=True)]
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
        for b, (xi, graph) in enumerate(zip(xs, graphs, strict=True)):
            x[b, : sizes[b]] = xi
            edges[b, : sizes[b], : sizes[b]] = graph.dense_adjacency(device)
            valid[b, : sizes[b]] = True
        # no mask where every graph has n nodes (one graph: the common case), which masks nothing
        mask = None if bool(valid.all()) else valid.unsqueeze(2) & valid.unsqueeze(1)
        out = self.gnn(x, edges, mask)
        return [out[b, : sizes[b]] for b in range(len(xs))]

    def forward(
        self,
        graphs: Sequence[Graph],
        plans: Sequence[Plan],
        *,
        predict_classifier: bool = True,
        sink: Optional[Sink] = None,
        generator: Optional[torch.Generator] = None,
        defer_tiling: bool = False,
    ) -> list[dict[str, Union[torch.Tensor, Tiled]]]:
        """Predict the tensors of each graph's model: embed the nodes, then decode every planned target.

        Targets with the same :attr:`Target.key` (decoder kind and decoded shape) are decoded in one
        batched call, whatever graph they come from; each output is then cropped, tiled and (with
        ``config.weight_norm``) scaled to its tensor's shape (:func:`ghn_init.decode.fit_to_shape`).
        With autograd on, the tensors keep their history, so the same call trains GHNs
        (``torch.func.functional_call(model, tensors, x)``). With autograd off (``torch.no_grad()``, as
        ``apply`` and ``predict`` run it) and a large weight decoder (``_NEEDED_MIN_WEIGHTS``: GHN-3-XL, not
        the small GHNs), the weight decoder computes each tensor only at the channels fitting it keeps, for
        up to ``_CHUNK`` decoded values of any groups at once (:meth:`WeightDecoder.decode_needed`): the
        same values within float32 rounding, a fraction of the work for a wide GHN. Nothing is written into
        any model.

        Args:
            graphs: the models' graphs (:func:`ghn_init.trace`).
            plans: one :class:`~ghn_init.Plan` per graph (:func:`ghn_init.plan`).
            predict_classifier: also decode the models' last (classification) layer.
            sink: a dry run: each tensor is handed to ``sink(graph index, tensor name, tensor)`` as soon
                as it is made and is not kept (the returned dicts stay empty), so predicting a huge
                model (e.g. built on the meta device) needs the memory of one tensor, not of the model.
            generator: a CPU generator for the one random draw of decoding, the class-token row of a
                position embedding (:func:`ghn_init.decode.fit_to_shape`); default: torch's global RNG on
                the GHN's device, as published.
            defer_tiling: return large tensors made by tiling a decoded block as :class:`~ghn_init.tiling.Tiled`
                (the block and the shape), for a writer to tile into the model's tensors
                (:func:`ghn_init.writing.write_tensors`; ``apply`` asks for this when it writes the
                predictions unchanged). Not with ``sink``.

        Returns:
            Per graph, ``{tensor name: predicted tensor}`` in the GHN's dtype and device (with
            ``defer_tiling``, some values are :class:`~ghn_init.tiling.Tiled`).

        Raises:
            PredictionError: the GHN predicted non-finite values.
        """
        if len(graphs) != len(plans):
            raise ValueError(f"got {len(graphs)} graphs but {len(plans)} plans; pass one plan per graph")
        xs = self.embed_nodes(graphs, [p.shapes for p in plans])
        results: list[dict[str, torch.Tensor]] = [{} for _ in graphs]
        groups: dict[tuple[DecoderKind, tuple[int, ...]], list[tuple[int, Target]]] = {}
        for b, p in enumerate(plans):
            for target in p.predicted(predict_classifier):
                groups.setdefault(target.key, []).append((b, target))
        centre = not self.is_ghn2
        deferred = defer_tiling and sink is None

        def emit(b: int, target: Target, w: torch.Tensor, scaled: bool = False) -> None:
            """Fit ``w`` to the target's tensor(s) and hand them on; ``scaled``: the group was already scaled."""
            slot = target.slot
            if len(slot.shape) == 1:  # 1-D decoders give two rows: weight, bias
                outputs = [(slot, w[0 if slot.is_weight else 1])]
                if target.bias is not None:
                    outputs.append((target.bias, w[1]))
            else:
                outputs = [(slot, w)]
            for out_slot, tensor in outputs:
                norm = out_slot.is_weight if self.config.weight_norm and not scaled else None
                # a norm layer's bias is fitted to its weight's shape, as the published code does
                tensor = fit_to_shape(tensor, slot.shape, centre, norm, generator=generator, defer_tiling=deferred)
                if sink is not None:
                    sink(b, out_slot.name, tensor)
                else:
                    results[b][out_slot.name] = tensor

        # Inference decodes weights only at the channels the tensors use, several groups per call (decode_needed
        # for a large weight decoder, else forward_batched); with autograd on (training) every group is decoded
        # whole by its own call, as published.
        inference = not torch.is_grad_enabled()
        needed = inference and self.decoder.last_layer_weights >= _NEEDED_MIN_WEIGHTS
        pending: list[tuple[DecoderKind, tuple[int, ...], int, Target]] = []
        pending_size = 0
        # inference with a small weight decoder: weight groups are decoded several at a time (forward_batched),
        # in group order, up to _CHUNK values per batch; ``batchable`` lists them, ``decoded_ahead`` holds results
        batchable = [] if needed or not inference else [k for k in groups if k[0] in _WEIGHT_KINDS]
        decoded_ahead: dict[tuple[DecoderKind, tuple[int, ...]], torch.Tensor] = {}
        for (kind, shape), members in groups.items():
            if needed and kind in _WEIGHT_KINDS:
                for b, target in members:
                    pending.append((kind, shape, b, target))
                    pending_size += math.prod(_needs(kind, shape, target.slot.shape, self.config.max_shape))
                    if pending_size >= _CHUNK:  # bounds the memory of the decoded blocks held at once
                        self._decode_needed(pending, xs, emit)
                        pending, pending_size = [], 0
                continue
            self._decode_needed(pending, xs, emit)
            pending, pending_size = [], 0
            if (kind, shape) in decoded_ahead:
                decoded = decoded_ahead.pop((kind, shape))
            elif batchable and (kind, shape) == batchable[0]:
                decoded_ahead = self._decode_batch(batchable, groups, xs)
                decoded = decoded_ahead.pop((kind, shape))
            else:  # the other decoders; with autograd on, every group whole by its own call, as published
                decoded = self._decode(kind, shape, torch.stack([xs[b][t.node] for b, t in members]))
            _check_finite(decoded, len(members), kind, shape)
            scaled = kind is DecoderKind.VECTOR
            if scaled:  # norm layers: scaled and tiled once for the group (equal values, a fraction of the calls)
                longest = max(t.slot.shape[0] for _, t in members)
                decoded = fit_vector_group(decoded, longest, self.config.weight_norm)
            elif inference and self.config.weight_norm and kind in _WEIGHT_KINDS and decoded.dtype in _EXACT_SCALING:
                decoded = _scale_group(decoded, [t.slot.shape for _, t in members])
                scaled = True
            for row, (b, target) in enumerate(members):
                emit(b, target, decoded[row], scaled=scaled)
        self._decode_needed(pending, xs, emit)
        return results

    def _channels(
        self, kind: DecoderKind, shape: tuple[int, ...], members: list[tuple[int, Target]]
    ) -> tuple[int, int]:
        """The (out, in) channels some member of a weight group reads: a group of 32-channel convs decoded at
        64 computes 32 (inference only; training decodes whole groups, as published)."""
        used = [_needs(kind, shape, t.slot.shape, self.config.max_shape) for _, t in members]
        return max(u[0] for u in used), max(u[1] for u in used)

    def _decode_batch(
        self,
        batchable: list[tuple[DecoderKind, tuple[int, ...]]],
        groups: dict[tuple[DecoderKind, tuple[int, ...]], list[tuple[int, Target]]],
        xs: list[torch.Tensor],
    ) -> dict[tuple[DecoderKind, tuple[int, ...]], torch.Tensor]:
        """Decode the first groups of ``batchable`` (removed from it) in one :meth:`WeightDecoder.forward_batched`
        call, at the channels their members read, up to :data:`_CHUNK` decoded values (at least one group)."""
        calls, keys, size = [], [], 0
        while batchable:
            kind, shape = batchable[0]
            members = groups[(kind, shape)]
            channels = self._channels(kind, shape, members)
            values = len(members) * math.prod(channels) * math.prod(shape[2:])
            if keys and size + values > _CHUNK:
                break
            classifier = kind is DecoderKind.CLASSIFIER
            decoded_shape = (shape[0], shape[1], 1, 1) if classifier else shape
            calls.append((torch.stack([xs[b][t.node] for b, t in members]), decoded_shape, classifier, channels))
            keys.append(batchable.pop(0))
            size += values
        return dict(zip(keys, self.decoder.forward_batched(calls), strict=True))

    def _decode_needed(
        self,
        pending: list[tuple[DecoderKind, tuple[int, ...], int, Target]],
        xs: list[torch.Tensor],
        emit: Callable[[int, Target, torch.Tensor], None],
    ) -> None:
        """Decode weight-decoder targets (in order, any groups) at the channels they use, then ``emit`` each."""
        if not pending:
            return
        batches: dict[tuple[DecoderKind, tuple[int, ...]], list[tuple[int, Target]]] = {}
        for kind, shape, b, target in pending:
            batches.setdefault((kind, shape), []).append((b, target))
        requests = []
        for (kind, shape), members in batches.items():
            classifier = kind is DecoderKind.CLASSIFIER
            decoded_shape = (shape[0], shape[1], 1, 1) if classifier else shape
            needs = [_needs(kind, shape, t.slot.shape, self.config.max_shape)[:2] for _, t in members]
            x = torch.stack([xs[b][t.node] for b, t in members])
            requests.append(Request(x, decoded_shape, classifier, needs))
        decoded = self.decoder.decode_needed(requests)
        by_target: dict[int, torch.Tensor] = {}
        for ((kind, shape), members), tensors in zip(batches.items(), decoded, strict=True):
            for (_, target), w in zip(members, tensors, strict=True):
                _check_finite(w, len(members), kind, shape)
                by_target[id(target)] = w
        for _, _, b, target in pending:
            emit(b, target, by_target[id(target)])

    def _decode(self, kind: DecoderKind, shape: tuple[int, ...], x: torch.Tensor) -> torch.Tensor:
        """Decode a batch of node embeddings ``x`` (n, hid) with the head ``kind`` at size ``shape``."""
        n = x.shape[0]
        if kind is DecoderKind.WEIGHT:
            return self.decoder(x, shape)
        if kind is DecoderKind.CLASSIFIER:
            return self.decoder(x, (shape[0], shape[1], 1, 1), classifier=True)
        if kind is DecoderKind.TENSOR_3D:
            return self.decoder_1d(x).view(n, -1, 1, 1)
        decoded = self.decoder_1d(x).view(n, 2, -1)
        return self.bias_class(decoded) if kind is DecoderKind.CLASSIFIER_BIAS else decoded

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
