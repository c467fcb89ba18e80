"""The GHN vocabulary: 15 DeepNets-1M primitives, and which module types map to them.

GHN-2 and GHN-3 embed every graph node by one of these 15 types; a published checkpoint's
embedding table is indexed by this exact order, so it must never change.

Module types are looked up along the class hierarchy (``type(m).__mro__``), so a subclass such as
timm's ``BatchNormAct2d`` (a ``BatchNorm2d``) gets its base's meaning without being listed.
"""

from __future__ import annotations

from typing import Callable, Optional, Union

import torch.nn as nn

from .libraries import torchvision_class

PRIMITIVES: tuple[str, ...] = (
    "max_pool",
    "avg_pool",
    "sep_conv",
    "dil_conv",
    "conv",
    "msa",
    "cse",
    "sum",
    "concat",
    "input",
    "bias",
    "bn",
    "ln",
    "pos_enc",
    "glob_avg",
)
PRIMITIVE_INDEX: dict[str, int] = {p: i for i, p in enumerate(PRIMITIVES)}

# A rule gives the primitive of one parameter of a module: rule(module, param_name) -> primitive.
PrimitiveRule = Callable[[nn.Module, str], str]


def _conv_like(module: nn.Module, param_name: str) -> str:
    """Weights of linear/conv layers; grouped convs are sep/dil convs as in DeepNets-1M."""
    if "bias" in param_name:
        return "bias"
    if isinstance(module, nn.Conv2d) and module.groups > 1:
        return "dil_conv" if min(module.dilation) > 1 else "sep_conv"
    return "conv"


def _fixed(primitive: str) -> PrimitiveRule:
    def rule(module: nn.Module, param_name: str) -> str:
        return primitive

    rule.__name__ = f"always_{primitive}"
    return rule


_MODULE_RULES: dict[type, PrimitiveRule] = {
    nn.Conv2d: _conv_like,
    nn.Linear: _conv_like,  # a linear layer is a 1x1 conv for the GHN
    nn.MultiheadAttention: _conv_like,  # its in_proj_weight/in_proj_bias
    nn.BatchNorm2d: _fixed("bn"),
    nn.LayerNorm: _fixed("ln"),
    nn.Embedding: _fixed("pos_enc"),  # GHNs use pos_enc for any learned embedding
}

# torchvision layers, registered the first time a rule is looked up after torchvision is imported
# (``import ghn_init`` does not import torchvision; a model cannot hold these before it is imported).
_TORCHVISION_RULES: dict[str, PrimitiveRule] = {
    "convnext.LayerNorm2d": _fixed("ln"),
    "vision_transformer.Encoder": _fixed("pos_enc"),  # holds pos_embedding
}
_torchvision_registered = False


def _register_torchvision() -> None:
    global _torchvision_registered
    for path, rule in _TORCHVISION_RULES.items():
        cls = torchvision_class(path)
        if cls is not None:
            _MODULE_RULES.setdefault(cls, rule)  # a user's register_module keeps precedence
    _torchvision_registered = True

# Autograd operation names (without the ``Backward<N>`` suffix) that are nodes of the GHN graph.
OP_PRIMITIVES: dict[str, str] = {
    "Mean": "glob_avg",
    "AdaptiveAvgPool2D": "glob_avg",
    "MaxPool2DWithIndices": "max_pool",
    "AvgPool2D": "avg_pool",
    "Softmax": "msa",
    "Mul": "cse",
    "Add": "sum",
    "Cat": "concat",
}


def register_module(module_type: type, primitive: Union[str, PrimitiveRule]) -> None:
    """Tell ghn-init what a custom layer is, so the GHN predicts its parameters.

    The weight of a registered module becomes a node of that type (its bias a ``bias`` node), and
    subclasses of ``module_type`` inherit the registration. The registration is process-wide.

    Args:
        module_type: an ``nn.Module`` subclass.
        primitive: one of :data:`PRIMITIVES` (``"conv"``, ``"bn"``, ``"ln"``, ...) or a function
            ``(module, param_name) -> primitive name`` for layers whose tensors play different roles.

    Raises:
        TypeError: ``module_type`` is not an ``nn.Module`` subclass, or ``primitive`` is neither a name
            nor a callable.
        ValueError: ``primitive`` is not a known primitive name.

    Example:
        >>> import ghn_init, torch.nn as nn
        >>> class MyConv(nn.Conv2d): ...
        >>> ghn_init.register_module(MyConv, "conv")
    """
    if not isinstance(module_type, type) or not issubclass(module_type, nn.Module):
        raise TypeError(f"register_module expects an nn.Module subclass, got {module_type!r}")
    if isinstance(primitive, str):
        if primitive not in PRIMITIVE_INDEX:
            raise ValueError(f"unknown primitive {primitive!r}; choose one of {', '.join(PRIMITIVES)}")
        rule = _conv_like if primitive == "conv" else _fixed(primitive)
    elif callable(primitive):
        rule = primitive
    else:
        raise TypeError("primitive must be a primitive name or a callable (module, param_name) -> name")
    _MODULE_RULES[module_type] = rule


def module_rule(module: Optional[nn.Module]) -> Optional[PrimitiveRule]:
    """The rule for a module, found along its class hierarchy; None if the GHN has no node for it."""
    if module is None:
        return None
    if not _torchvision_registered and torchvision_class("convnext.LayerNorm2d") is not None:
        _register_torchvision()
    for cls in type(module).__mro__:
        rule = _MODULE_RULES.get(cls)
        if rule is not None:
            return rule
    return None


def op_primitive(op_name: str) -> Optional[str]:
    """Primitive of an autograd operation name such as ``AddBackward0`` (None if not a GHN node)."""
    cut = op_name.find("Backward")
    return OP_PRIMITIVES.get(op_name if cut < 0 else op_name[:cut])
