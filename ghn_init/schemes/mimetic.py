"""``mimetic``: data-free attention init that mimics trained attention (Trockman & Kolter, ICML 2023)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn as nn

from ..errors import UnsupportedModelError
from .base import SchemeReport

__all__ = ["mimetic", "attention_layers", "AttentionLayer"]

QK_ALPHA, QK_BETA = 0.7, 0.7  # the paper's values for ViTs
VO_ALPHA, VO_BETA = 0.4, 0.4


@dataclass
class AttentionLayer:
    """One attention layer's four projections as views of ``(out, in)`` Linear-style weights.

    ``q``, ``k``, ``v`` are ``(dim, dim)`` with head ``h`` in rows ``h*k:(h+1)*k``; ``o`` is ``(dim, dim)`` with
    head ``h`` in columns ``h*k:(h+1)*k``. ``names`` are the tensors they live in.
    """

    name: str
    heads: int
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    o: torch.Tensor
    names: tuple[str, ...]


def _heads(module: nn.Module, *attrs: str) -> Optional[int]:
    for a in attrs:
        n = getattr(module, a, None)
        if isinstance(n, int) and n > 0:
            return n
    return None


def attention_layers(model: nn.Module) -> list[AttentionLayer]:
    """Every self-attention layer of ``model`` whose projections mimetic init can write, by structure:

    - ``torch.nn.MultiheadAttention`` (torchvision's ViT): ``in_proj_weight`` (or ``q/k/v_proj_weight``) and
      ``out_proj``;
    - timm ``Attention``: a fused ``qkv`` Linear ``(3 dim, dim)``, a ``proj`` Linear and ``num_heads``;
    - Hugging Face BERT/ViT-style: ``query``/``key``/``value`` Linears and ``num_attention_heads``, the output
      projection in the parent's ``output.dense``; or ``q_proj``/``k_proj``/``v_proj``/``out_proj`` (CLIP, OPT...).
    """
    modules = dict(model.named_modules())
    found: list[AttentionLayer] = []

    def add(name: str, heads: Optional[int], q, k, v, o, names) -> None:
        if heads and q.shape[0] == q.shape[1] == k.shape[0] == k.shape[1] == v.shape[0] == o.shape[1]:
            found.append(AttentionLayer(name, heads, q, k, v, o, tuple(names)))

    def p(name: str, attr: str) -> str:
        return f"{name}.{attr}" if name else attr

    for name, m in modules.items():
        if isinstance(m, nn.MultiheadAttention):
            if m._qkv_same_embed_dim:
                q, k, v = m.in_proj_weight.chunk(3)
                names = [p(name, "in_proj_weight")]
            else:
                q, k, v = m.q_proj_weight, m.k_proj_weight, m.v_proj_weight
                names = [p(name, a) for a in ("q_proj_weight", "k_proj_weight", "v_proj_weight")]
            add(name, m.num_heads, q, k, v, m.out_proj.weight, names + [p(name, "out_proj.weight")])
        elif isinstance(getattr(m, "qkv", None), nn.Linear) and isinstance(getattr(m, "proj", None), nn.Linear):
            w = m.qkv.weight
            if w.shape[0] == 3 * w.shape[1]:
                q, k, v = w.chunk(3)
                add(
                    name,
                    _heads(m, "num_heads", "heads"),
                    q,
                    k,
                    v,
                    m.proj.weight,
                    [p(name, "qkv.weight"), p(name, "proj.weight")],
                )
        elif all(isinstance(getattr(m, a, None), nn.Linear) for a in ("query", "key", "value")):
            parent = modules.get(name.rpartition(".")[0]) if "." in name else model
            out = getattr(getattr(parent, "output", None), "dense", None)
            if isinstance(out, nn.Linear):
                out_name = p(name.rpartition(".")[0] if "." in name else "", "output.dense.weight")
                add(
                    name,
                    _heads(m, "num_attention_heads", "num_heads"),
                    m.query.weight,
                    m.key.weight,
                    m.value.weight,
                    out.weight,
                    [p(name, f"{a}.weight") for a in ("query", "key", "value")] + [out_name],
                )
        elif all(isinstance(getattr(m, a, None), nn.Linear) for a in ("q_proj", "k_proj", "v_proj", "out_proj")):
            add(
                name,
                _heads(m, "num_heads", "num_attention_heads"),
                m.q_proj.weight,
                m.k_proj.weight,
                m.v_proj.weight,
                m.out_proj.weight,
                [p(name, f"{a}.weight") for a in ("q_proj", "k_proj", "v_proj", "out_proj")],
            )
    return found


def _factor_pair(
    dim: int, rank: int, alpha: float, beta: float, generator: Optional[torch.Generator]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``A, B`` of shape ``(dim, rank)`` with ``A B^T`` the best rank-``rank`` approximation of
    ``alpha Z + beta I``, ``Z_ij ~ N(0, 1/dim)`` (truncated SVD, ``sqrt`` of the singular values on each side)."""
    z = torch.randn(dim, dim, generator=generator) / dim**0.5
    u, s, vh = torch.linalg.svd(alpha * z + beta * torch.eye(dim))
    root = s[:rank].sqrt()
    return u[:, :rank] * root, vh[:rank].T * root


def mimetic(
    model: nn.Module,
    *,
    data: Any = None,
    generator: Optional[torch.Generator] = None,
    qk: tuple[float, float] = (QK_ALPHA, QK_BETA),
    vo: tuple[float, float] = (VO_ALPHA, VO_BETA),
) -> SchemeReport:
    """Mimetic init of self-attention (Trockman & Kolter, "Mimetic Initialization of Self-Attention Layers",
    ICML 2023): data-free, makes each head's products look like those of trained attention.

    For every head ``h`` (head size ``k``, width ``d``), with ``Z ~ N(0, 1/d)`` drawn afresh each time:

    - ``W_q^h W_k^h^T ≈ alpha_1 Z_1 + beta_1 I``: tokens attend to similar tokens (their own position first);
    - ``W_v^h W_o^h ≈ alpha_2 Z_2 - beta_2 I``: the value/output path starts as a negative scaled identity;

    each the best rank-``k`` approximation (truncated SVD, ``sqrt`` of the singular values on each factor). Defaults
    ``alpha_1 = beta_1 = 0.7``, ``alpha_2 = beta_2 = 0.4`` (the paper's ViT values). ``W_q = weight_q^T`` acts as
    ``q = x W_q``. Only the four projection matrices are written; biases and the rest keep the model's init.

    Args:
        model: a model with torchvision (``nn.MultiheadAttention``), timm (fused ``qkv``) or Hugging Face
            (``query``/``key``/``value`` + ``output.dense``, or ``q_proj``/``k_proj``/``v_proj``/``out_proj``)
            self-attention (see :func:`attention_layers`).
        data: not used.
        generator: CPU ``torch.Generator`` for ``Z`` (default: the global RNG).
        qk: ``(alpha_1, beta_1)``. vo: ``(alpha_2, beta_2)``.

    Returns:
        :class:`SchemeReport`.

    Raises:
        UnsupportedModelError: the model has no self-attention layer of these kinds.

    Example:
        >>> vit = torchvision.models.vit_b_16()
        >>> ghn_init.get_scheme("mimetic")(vit)  # doctest: +SKIP
    """
    with torch.no_grad():  # views of the weights, written in place below
        layers = attention_layers(model)
    if not layers:
        raise UnsupportedModelError(
            f"mimetic init applies to self-attention and {type(model).__name__} has none that it recognizes "
            "(nn.MultiheadAttention, timm qkv/proj, Hugging Face query/key/value); use another scheme",
            scheme="mimetic",
            model=type(model).__name__,
        )
    report = SchemeReport("mimetic", type(model).__name__)

    def write(dst: torch.Tensor, src: torch.Tensor) -> None:
        dst.copy_(src.to(dst.dtype))

    with torch.no_grad():
        for layer in layers:
            dim, heads = layer.q.shape[1], layer.heads
            if dim % heads:
                continue
            size = dim // heads
            for h in range(heads):
                rows = slice(h * size, (h + 1) * size)
                a, b = _factor_pair(dim, size, qk[0], qk[1], generator)
                write(layer.q[rows], a.T)
                write(layer.k[rows], b.T)
                a, b = _factor_pair(dim, size, vo[0], -vo[1], generator)
                write(layer.v[rows], a.T)
                write(layer.o[:, rows], b)
            report.touched += [n for n in layer.names if n not in report.touched]
            report.details[layer.name] = f"{heads} heads of size {size}"
    return report
