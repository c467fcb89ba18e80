"""GHN hyperparameters, and how to read them off a published checkpoint's keys and shapes."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import torch

GHN2, GHN3 = "ghn2", "ghn3"


@dataclass
class GHNConfig:
    """Everything needed to rebuild a GHN before loading its weights."""

    kind: str = GHN3  # "ghn3" (Graphormer layers) or "ghn2" (gated GNN)
    hid: int = 64
    max_shape: tuple[int, int, int, int] = (64, 64, 16, 16)  # largest (out, in, h, w) the decoder emits
    num_classes: int = 1000
    layers: int = 3  # Graphormer layers (GHN-3 only)
    heads: int = 8  # attention heads (GHN-3 only)
    mlp_ratio: int = 4
    layernorm: bool = True  # LayerNorm on node embeddings before decoding
    weight_norm: bool = True  # fan-in scaling of predicted weights (GHN-2, Sec. 4.3)
    virtual_edges: bool = True
    extra: dict[str, Any] = field(default_factory=dict)  # free-form provenance, kept in config.json

    def __post_init__(self) -> None:
        if self.kind not in (GHN2, GHN3):
            raise ValueError(f"kind must be {GHN2!r} or {GHN3!r}, got {self.kind!r}")
        self.max_shape = tuple(int(s) for s in self.max_shape)  # type: ignore[assignment]
        if len(self.max_shape) != 4 or self.max_shape[2] != self.max_shape[3]:
            raise ValueError(f"max_shape must be (out, in, k, k), got {self.max_shape}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["max_shape"] = list(self.max_shape)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GHNConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown GHN config keys: {sorted(unknown)}")
        return cls(**dict(d))

    @classmethod
    def from_ppuda(cls, d: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor]) -> GHNConfig:
        """The ``config`` dict stored in ppuda's GHN-2 checkpoints."""
        if d.get("hypernet", "gatedgnn") != "gatedgnn" or d.get("decoder", "conv") != "conv":
            raise ValueError(
                f"unsupported ppuda GHN variant hypernet={d.get('hypernet')!r} decoder={d.get('decoder')!r}; "
                "only the GatedGNN + conv decoder (GHN-2) is supported"
            )
        kind = GHN2 if any(".gru." in k for k in state_dict) else GHN3
        inferred = cls.infer(state_dict)
        return cls(
            kind=kind,
            hid=int(d.get("hid", inferred.hid)),
            max_shape=tuple(d.get("max_shape", inferred.max_shape)),  # type: ignore[arg-type]
            num_classes=int(d.get("num_classes", inferred.num_classes)),
            layers=inferred.layers,
            heads=inferred.heads,
            layernorm=bool(d.get("layernorm", inferred.layernorm)),
            weight_norm=bool(d.get("weight_norm", True)),
            virtual_edges=bool(d.get("ve", inferred.virtual_edges)),
        )

    @classmethod
    def infer(cls, state_dict: Mapping[str, torch.Tensor]) -> GHNConfig:
        """Read the config off parameter names and shapes, as the published GHN-3 loader does."""
        keys = list(state_dict)
        if "embed.weight" not in state_dict or "decoder.conv.2.weight" not in state_dict:
            raise ValueError(
                "this state dict is not a GHN-2/GHN-3 checkpoint: it has no 'embed.weight' or "
                f"'decoder.conv.2.weight' (first keys: {keys[:5]})"
            )
        kind = GHN2 if any(".gru." in k for k in keys) else GHN3
        hid = int(state_dict["embed.weight"].shape[-1])
        max_ch = int(round(math.sqrt(state_dict["decoder.conv.2.weight"].shape[0])))
        num_classes = int(state_dict["decoder.class_layer_predictor.1.weight"].shape[0])
        spatial = state_dict.get("shape_enc.embed_spatial.weight")
        if spatial is not None:
            k = 11 if spatial.shape[0] == 9 else 16
        else:
            k = 16 if num_classes >= 1000 else 11
        layers = sum(1 for k_ in keys if k_.startswith("gnn.") and k_.endswith("ln1.weight"))
        return cls(
            kind=kind,
            hid=hid,
            max_shape=(max_ch, max_ch, k, k),
            num_classes=num_classes,
            layers=layers if kind == GHN3 else 0,
            heads=16 if hid > 64 else 8,
            layernorm="ln.weight" in state_dict,
            weight_norm=True,
            virtual_edges=kind == GHN3 or any(k_.startswith("gnn.mlp_ve.") for k_ in keys),
        )
