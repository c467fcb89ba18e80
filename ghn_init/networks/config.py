"""GHN hyperparameters, and how to read them off a published checkpoint's keys and shapes."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Optional

import torch

from ..errors import ConfigError

GHN2, GHN3 = "ghn2", "ghn3"

# The type each config.json field must have (bool is checked before int: JSON true is not a width).
_FIELD_TYPES: dict[str, type] = {
    "kind": str,
    "hid": int,
    "max_shape": list,
    "num_classes": int,
    "layers": int,
    "heads": int,
    "mlp_ratio": int,
    "layernorm": bool,
    "weight_norm": bool,
    "virtual_edges": bool,
    "postprocess": str,
    "extra": dict,
}
_OPTIONAL_FIELDS = ("postprocess", "extra")  # may be absent; postprocess may also be null
_JSON_NAMES = {str: "a string", int: "an integer", list: "a list", bool: "true or false", dict: "an object"}


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
    postprocess: Optional[str] = None  # recommended post-processing of predictions (ghn_init.postprocess)
    extra: dict[str, Any] = field(default_factory=dict)  # free-form provenance, kept in config.json

    def __post_init__(self) -> None:
        if self.kind not in (GHN2, GHN3):
            raise ConfigError(f"kind must be {GHN2!r} or {GHN3!r}, got {self.kind!r}", field="kind")
        try:
            self.max_shape = tuple(int(s) for s in self.max_shape)  # type: ignore[assignment]
        except (TypeError, ValueError):
            message = f"max_shape must be 4 integers (out, in, k, k), got {self.max_shape!r}"
            raise ConfigError(message, field="max_shape") from None
        if len(self.max_shape) != 4 or self.max_shape[2] != self.max_shape[3] or min(self.max_shape) < 1:
            message = f"max_shape must be 4 positive integers (out, in, k, k), got {self.max_shape}"
            raise ConfigError(message, field="max_shape")
        for name in ("hid", "num_classes", "heads", "mlp_ratio"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)!r}", field=name)
        if self.kind == GHN3 and (self.layers < 1 or self.hid % self.heads):
            raise ConfigError(
                f"a ghn3 config needs layers >= 1 and hid divisible by heads, got layers={self.layers}, "
                f"hid={self.hid}, heads={self.heads}",
                field="layers" if self.layers < 1 else "heads",
            )
        if self.postprocess is not None:
            from ..postprocess import PostProcess

            try:
                self.postprocess = str(PostProcess.parse(self.postprocess))  # validated, canonical form
            except (TypeError, ValueError) as e:
                raise ConfigError(str(e), field="postprocess") from None

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON types (the ``"ghn"`` section of ``config.json``)."""
        d = asdict(self)
        d["max_shape"] = list(self.max_shape)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, origin: str = "GHN config") -> GHNConfig:
        """A config from its :meth:`to_dict` form, checked field by field.

        Every field except ``extra`` and ``postprocess`` is required and must have its JSON type
        (``"layernorm": "false"`` is refused, not read as true); unknown fields are refused.

        Args:
            d: the ``"ghn"`` section of a ``config.json``.
            origin: where ``d`` comes from, named in errors (e.g. the path of the config.json).

        Returns:
            The config.

        Raises:
            ConfigError: a field is missing, unknown, of the wrong type or out of range (``.field`` names it).

        Example:
            >>> GHNConfig.from_dict({**GHNConfig().to_dict(), "hid": 32}).hid
            32
        """
        if not isinstance(d, Mapping):
            raise ConfigError(f"{origin}: the GHN config must be a JSON object, got {type(d).__name__}", path=origin)
        unknown = sorted(set(d) - set(_FIELD_TYPES))
        if unknown:
            raise ConfigError(
                f"{origin}: unknown GHN config key {unknown[0]!r} (known: {', '.join(_FIELD_TYPES)})",
                path=origin,
                field=unknown[0],
            )
        for name, kind in _FIELD_TYPES.items():
            if name not in d:
                if name in _OPTIONAL_FIELDS:
                    continue
                raise ConfigError(f"{origin}: the GHN config has no {name!r}", path=origin, field=name)
            value = d[name]
            if value is None and name == "postprocess":
                continue
            wrong = not isinstance(value, kind) or (kind is int and isinstance(value, bool))
            if name == "max_shape" and not wrong:
                wrong = not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            if wrong:
                expected = "a list of 4 integers" if name == "max_shape" else _JSON_NAMES[kind]
                raise ConfigError(
                    f"{origin}: GHN config field {name!r} must be {expected}, got {json_repr(value)}",
                    path=origin,
                    field=name,
                )
        try:
            return cls(**dict(d))
        except ConfigError as e:
            raise ConfigError(f"{origin}: {e}", path=origin, field=e.field) from None

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


def json_repr(value: Any) -> str:
    """``value`` as it would appear in JSON, shortened (for error messages)."""
    import json

    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
