"""Post-processing of predicted parameters: orthogonal re-initialization and relative Gaussian noise.

Both come from the published follow-up work on GHN initialization:

- *orthogonal re-initialization* (Knyazev, "Pretraining a Neural Network before Knowing Its
  Architecture", ICML 2022 workshop; ``ppuda.utils.init``): every weight matrix (conv kernels
  flattened to ``(out, in * k * k)``) is replaced by the orthonormal factor ``Q`` of its QR
  decomposition, signs fixed by ``diag(R)``. ``Q`` spans the same space as the prediction and keeps
  its orientation, but has unit singular values, which repairs tiled (low-rank) predictions of
  layers wider than the GHN's decoder.
- *relative Gaussian noise* (the GHN-3 training scripts use ``beta = 1e-5``): Gaussian noise scaled
  by ``beta`` times the spread of the weight matrix's correlation coefficients; norm layers get the
  noise scale of the weight before them. It breaks the exact symmetry of tiled predictions.

As published, the classification layer (the model's last weight of two or more dimensions) and
the norm-layer tensors after it are left as predicted. Everything here is a pure function of the
predicted tensors (and a ``torch.Generator``): nothing is written into a model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Collection, Iterable, Mapping, Optional, Sequence, Union

import torch

__all__ = ["PostProcess", "postprocess", "postprocess_predictions", "orthogonalize", "relative_noise_scale"]

NOISE_BETA = 1e-5  # the published GHN-3 fine-tuning scripts' beta
_NOISE = re.compile(r"^noise(?:=(?P<beta>[0-9.eE+-]+))?$")


_DROPS = {"nohead": "drop_classifier", "nobias": "drop_biases", "nogain": "drop_gains", "nonorm": "drop_norms"}


@dataclass(frozen=True)
class PostProcess:
    """What to do to predicted tensors before they are written into a model.

    Args:
        orthogonal: replace each predicted weight matrix by its orthonormal QR factor (published).
        noise: ``beta`` of the relative Gaussian noise (0: none); added before orthogonalization
            (published).
        drop_classifier: do not write the classifier (weight and bias): it keeps the model's own init.
        drop_biases: do not write biases of convolutions and linear layers (norm-layer biases are written).
        drop_gains: do not write the weights (gains) of norm layers.
        drop_norms: do not write norm layers at all (weights and biases).

    The ``drop_*`` options are ours, not from the papers: a GHN trained briefly on small
    networks predicts these 1-D tensors poorly for networks unlike its training set, and leaving
    them at the model's init is then better (see ``docs/init_quality.md``).

    Example:
        >>> PostProcess.parse("orth+noise")
        PostProcess(orthogonal=True, noise=1e-05, drop_classifier=False, drop_biases=False, drop_gains=False, \
drop_norms=False)
        >>> str(PostProcess(orthogonal=True, drop_gains=True))
        'orth+nogain'
    """

    orthogonal: bool = False
    noise: float = 0.0
    drop_classifier: bool = False
    drop_biases: bool = False
    drop_gains: bool = False
    drop_norms: bool = False

    def __post_init__(self) -> None:
        if not (self.noise >= 0.0 and self.noise < float("inf")):
            raise ValueError(f"post-processing noise must be a finite number >= 0, got {self.noise!r}")

    @property
    def is_identity(self) -> bool:
        return self == PostProcess()

    def __str__(self) -> str:
        parts = (["orth"] if self.orthogonal else []) + ([f"noise={self.noise:g}"] if self.noise else [])
        parts += [token for token, attr in _DROPS.items() if getattr(self, attr)]
        return "+".join(parts) or "none"

    @classmethod
    def parse(cls, spec: Union[str, PostProcess, None]) -> PostProcess:
        """Read a spec: ``"none"``, ``"orth"``, ``"noise"`` (beta 1e-5), ``"noise=1e-4"``, ``"nohead"``,
        ``"nobias"``, ``"nogain"``, ``"nonorm"``, or parts joined by ``+`` (``"orth+noise"``).

        Raises:
            ValueError: an unknown or repeated part, with the accepted forms.
        """
        if spec is None:
            return cls()
        if isinstance(spec, PostProcess):
            return spec
        if not isinstance(spec, str):
            raise TypeError(f"post-processing must be a string or PostProcess, got {type(spec).__name__}")
        values: dict = {}
        for part in (p.strip().lower() for p in spec.split("+")):
            if part in ("none", ""):
                continue
            match = _NOISE.match(part)
            if part in ("orth", "orthogonal"):
                key, value = "orthogonal", True
            elif match:
                key = "noise"
                try:
                    value = float(match["beta"]) if match["beta"] else NOISE_BETA
                except ValueError:
                    value = None
            elif part in _DROPS:
                key, value = _DROPS[part], True
            else:
                key, value = part, None
            if value is None:
                raise ValueError(
                    f"unknown post-processing {part!r} in {spec!r}; use 'none' or parts joined by '+': "
                    "orth, noise, noise=BETA, nohead, nobias, nogain, nonorm (e.g. 'orth+noise')"
                )
            if key in values:
                raise ValueError(f"post-processing {spec!r} names {part!r} twice")
            values[key] = value
        return cls(**values)


def _as_matrix(w: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """``w`` as a tall 2-D matrix (rows >= columns) and whether it was transposed."""
    m = w.reshape(w.shape[0], -1)
    if m.shape[0] < m.shape[1]:
        return m.t(), True
    return m, False


def orthogonalize(w: torch.Tensor) -> torch.Tensor:
    """The orthonormal QR factor of a weight, in its shape and dtype.

    Args:
        w: a weight of two or more dimensions, seen as ``(w.shape[0], -1)``.

    Returns:
        A tensor like ``w`` whose rows (if it has fewer rows than columns) or columns are
        orthonormal, with the sign of each direction fixed so that ``diag(R) > 0``.

    Example:
        >>> q = orthogonalize(torch.randn(8, 4, 3, 3)).reshape(8, -1)
        >>> torch.allclose(q @ q.t(), torch.eye(8), atol=1e-5)
        True
    """
    if w.dim() < 2:
        raise ValueError(f"orthogonalize needs a tensor of 2 or more dimensions, got shape {tuple(w.shape)}")
    m, transposed = _as_matrix(w.detach().to(torch.float64 if w.dtype == torch.float64 else torch.float32))
    q, r = torch.linalg.qr(m)
    sign = torch.sign(torch.diagonal(r))
    q = q * torch.where(sign == 0, torch.ones_like(sign), sign)
    if transposed:
        q = q.t()
    return q.reshape(w.shape).to(w.dtype)


def relative_noise_scale(w: torch.Tensor) -> float:
    """Standard deviation of the correlation coefficients between the rows of ``w`` as a tall matrix.

    Computed from the small Gram matrix, so it needs ``columns**2`` memory rather than ``rows**2``;
    rows with zero variance have no correlation and are left out (``torch.corrcoef`` gives NaN).
    """
    m, _ = _as_matrix(w.detach().double())
    m = m - m.mean(1, keepdim=True)
    norms = m.norm(dim=1)
    m = m[norms > 0] / norms[norms > 0].unsqueeze(1)
    n = m.shape[0]
    if n < 2:
        return 0.0
    count = n * n
    total = m.sum(0).square().sum()  # sum of all correlation coefficients
    squares = (m.t() @ m).square().sum()  # sum of their squares: ||M M^T||_F = ||M^T M||_F
    var = (squares - total * total / count) / (count - 1)
    return float(var.clamp_min(0).sqrt())


def postprocess(
    predicted: Mapping[str, torch.Tensor],
    spec: Union[str, PostProcess, None],
    *,
    order: Optional[Iterable[str]] = None,
    classifier: Optional[str] = None,
    norms: Optional[Collection[str]] = None,
    gains: Collection[str] = (),
    generator: Optional[torch.Generator] = None,
) -> dict[str, torch.Tensor]:
    """Post-process predicted tensors; a pure function (the inputs are not modified).

    Args:
        predicted: tensor name -> predicted tensor (names as in ``model.named_parameters()``).
        spec: a :class:`PostProcess` or its string form (see :meth:`PostProcess.parse`).
        order: the names in the model's order (default: the order of ``predicted``); a norm
            layer's noise is scaled like the last weight matrix before it.
        classifier: the name of the classification weight, left as predicted together with the
            1-D tensors after it (as published); None to post-process every tensor.
        norms: the 1-D tensors of norm layers (weights and biases), the only 1-D tensors that get
            noise (as published: biases of convolutions and linear layers do not); default: all.
        gains: the weights of norm layers (for ``nogain``).
        generator: the CPU generator the noise is drawn from (default: torch's global one). The
            noise is drawn on the CPU in float32 and then moved, so a seed gives the same values
            on every device.

    Returns:
        A new dict with the same keys, less those dropped (``nohead``, ``nobias``, ``nogain``, ``nonorm``);
        tensors that were not changed are the same objects.
        Weight matrices are orthogonalized (position embeddings, shaped ``(1, tokens, dim)``,
        and the classifier are not); each tensor keeps its dtype and device.

    Example:
        >>> out = postprocess({"conv.weight": torch.randn(4, 2, 3, 3)}, "orth")
        >>> out["conv.weight"].shape
        torch.Size([4, 2, 3, 3])
    """
    pp = PostProcess.parse(spec)
    result = dict(predicted)
    if pp.is_identity:
        return result
    names = [n for n in (order if order is not None else predicted) if n in predicted]
    if order is not None:
        listed = set(names)
        names += [n for n in predicted if n not in listed]
    noise_scale = 0.0
    past_classifier = False
    for name in names:
        w = predicted[name]
        if name == classifier:
            past_classifier = True
        if past_classifier:
            if pp.drop_classifier:
                del result[name]
            continue
        is_norm = w.dim() == 1 and (norms is None or name in norms)
        dropped = (pp.drop_gains and name in gains) or (pp.drop_norms and w.dim() == 1 and is_norm)
        if dropped or (pp.drop_biases and w.dim() == 1 and not is_norm):
            del result[name]
            continue
        is_matrix = w.dim() >= 2 and not (w.dim() == 3 and w.shape[0] == 1)  # not a position embedding
        if is_matrix:
            noise_scale = relative_noise_scale(w) if pp.noise else 0.0
        elif not is_norm:
            continue
        new = w
        if pp.noise and noise_scale > 0:
            noise = torch.randn(w.shape, generator=generator, dtype=torch.float32)
            new = (w.float() + (pp.noise * noise_scale) * noise.to(w.device)).to(w.dtype)
        if pp.orthogonal and is_matrix:
            new = orthogonalize(new)
        result[name] = new
    return result


def postprocess_predictions(
    model: torch.nn.Module,
    predicted: Mapping[str, tuple],
    spec: Union[str, PostProcess, None],
    generator: Optional[torch.Generator] = None,
    *,
    classifier: Sequence[str] = (),
) -> dict[str, tuple]:
    """:func:`postprocess` for one model's predictions as ``apply`` holds them: name -> (slot, tensor).

    The model is only read: its parameter order and which 1-D tensors belong to norm layers (the
    module's ``weight`` is 1-D).

    Args:
        model: the model the predictions are for.
        predicted: tensor name -> (slot, tensor); a slot has ``.module``.
        spec: see :meth:`PostProcess.parse`.
        generator: see :func:`postprocess`.
        classifier: the classifier's tensors, weight first, as the plan decodes them
            (:meth:`ghn_init.Plan.classifier`: the ones ``predict_classifier=False`` keeps), placed last in
            the order so that exactly they are the head; empty: no head.

    Returns:
        A new dict name -> (slot, post-processed tensor), less the dropped tensors.
    """
    pp = PostProcess.parse(spec)
    if pp.is_identity:
        return dict(predicted)
    head = list(classifier)
    order = [name for name, _ in model.named_parameters() if name not in head] + head
    norms, gains = set(), set()
    for name, (slot, tensor) in predicted.items():
        weight = getattr(slot.module, "weight", None)
        if tensor.dim() == 1 and isinstance(weight, torch.Tensor) and weight.dim() == 1:
            norms.add(name)
            if slot.is_weight:
                gains.add(name)
    tensors = postprocess(
        {name: t for name, (_, t) in predicted.items()},
        pp,
        order=order,
        classifier=head[0] if head else None,
        norms=norms,
        gains=gains,
        generator=generator,
    )
    return {name: (slot, tensors[name]) for name, (slot, _) in predicted.items() if name in tensors}
