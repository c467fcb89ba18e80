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

Ours, each measured in ``ghn_init/bundled/README.md``: ``dcbalance`` (:func:`balance_dc`: predicted
kernels lose the excess of spatially constant energy the decoders give them), ``detile``
(:func:`detile`: the tiled copies that fill layers wider than the decoder are drawn afresh),
``keepnorm`` (each matrix keeps the norm of the model's own init) and the ``no*`` drops (tensors
left at the model's init).

As published, the classification layer (the model's last weight of two or more dimensions) and
the norm-layer tensors after it are left as predicted. Everything here is a pure function of the
predicted tensors (and a ``torch.Generator``; for ``keepnorm``, the norms of the model's tensors, only
read): nothing is written into a model.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import torch

from .errors import InvalidArgumentError, InvalidArgumentTypeError
from .planning import module_tensor

__all__ = [
    "POSTPROCESS_PARTS",
    "PostProcess",
    "Role",
    "postprocess",
    "postprocess_predictions",
    "balance_dc",
    "detile",
    "orthogonalize",
    "relative_noise_scale",
    "role_of",
]

NOISE_BETA = 1e-5  # the published GHN-3 fine-tuning scripts' beta
_NOISE = re.compile(r"^noise(?:=(?P<beta>.*))?$")


# value steps that are plain switches: token -> PostProcess field
_SWITCHES = {"dcbalance": "balance_dc", "detile": "detile", "keepnorm": "keep_norm"}

_DROPS = {
    "nohead": "drop_classifier",
    "nobias": "drop_biases",
    "nogain": "drop_gains",
    "nonorm": "drop_norms",
    "noembed": "drop_embeddings",
}

#: The parts of a post-processing spec (:meth:`PostProcess.parse`), as help texts and errors list them;
#: parts are joined by ``+``, and ``none`` means no post-processing.
POSTPROCESS_PARTS = ("orth", "noise[=BETA]", *_SWITCHES, *_DROPS)


class Role(enum.Enum):
    """What a predicted tensor is to its model; post-processing treats each role its own way.

    ``MATRIX``: a layer's weight of two or more dimensions (convolution, linear, attention
    projections): orthogonalized by ``orth``, noise scaled by its own correlations.
    ``BIAS``: a convolution's or linear layer's bias: left as predicted (``nobias`` drops it).
    ``GAIN``: a per-channel multiplier: a norm layer's weight, or a residual branch's layer scale
    (ConvNeXt's ``layer_scale``, shaped ``(C, 1, 1)``): never orthogonalized (it is a diagonal, not a
    matrix), noise scaled like the matrix before it; ``nogain`` drops it.
    ``NORM_BIAS``: a norm layer's bias: noise like a gain; ``nonorm`` drops it together with the gains.
    ``EMBEDDING``: a position embedding (an additive per-token offset, not a map): never
    orthogonalized and given no noise; ``noembed`` drops it.
    """

    MATRIX = "matrix"
    BIAS = "bias"
    GAIN = "gain"
    NORM_BIAS = "norm_bias"
    EMBEDDING = "embedding"


def role_of(w: torch.Tensor, name: str = "") -> Role:
    """The role of a tensor told from its shape alone (what :func:`postprocess` assumes without ``roles``).

    Two or more dimensions: a matrix, except ``(1, tokens, dim)``, a position embedding. One
    dimension: a norm layer's gain if the name ends in ``weight``, else its bias. Models know
    better: :func:`postprocess_predictions` reads the roles off the modules.

    Example:
        >>> role_of(torch.zeros(8, 3, 3, 3)), role_of(torch.zeros(1, 65, 128)), role_of(torch.zeros(8), "bn.bias")
        (<Role.MATRIX: 'matrix'>, <Role.EMBEDDING: 'embedding'>, <Role.NORM_BIAS: 'norm_bias'>)
    """
    if w.dim() >= 2:
        return Role.EMBEDDING if w.dim() == 3 and w.shape[0] == 1 else Role.MATRIX
    return Role.GAIN if name.endswith("weight") else Role.NORM_BIAS


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
        drop_norms: do not write norm layers at all (weights and biases; layer scales too).
        drop_embeddings: do not write position embeddings.
        balance_dc: scale the spatially constant part of each predicted ``k x k`` kernel so that it
            carries ``1 / k**2`` of the kernel's energy, before noise and orthogonalization
            (:func:`balance_dc`).
        detile: replace the tiled copies in a weight matrix wider than the GHN's decoder by random
            values of the predicted block's spread, before noise and orthogonalization (:func:`detile`).
        keep_norm: scale each post-processed weight matrix to the Frobenius norm of the tensor the
            model holds (its own init): the GHN gives the directions, the model the scale.

    The ``drop_*`` options are ours, not from the papers: a GHN trained briefly on small
    networks predicts these tensors poorly for networks unlike its training set (a GHN that never
    saw a position embedding still predicts one), and leaving them at the model's init is then
    better (see ``docs/init_quality.md``). Which tensor is which: :class:`Role`.

    Example:
        >>> PostProcess.parse("orth+noise")
        PostProcess(orthogonal=True, noise=1e-05, drop_classifier=False, drop_biases=False, drop_gains=False, \
drop_norms=False, drop_embeddings=False, balance_dc=False, detile=False, keep_norm=False)
        >>> str(PostProcess(orthogonal=True, drop_gains=True))
        'orth+nogain'
    """

    orthogonal: bool = False
    noise: float = 0.0
    drop_classifier: bool = False
    drop_biases: bool = False
    drop_gains: bool = False
    drop_norms: bool = False
    drop_embeddings: bool = False
    balance_dc: bool = False
    detile: bool = False
    keep_norm: bool = False

    def __post_init__(self) -> None:
        if not (isinstance(self.noise, (int, float)) and self.noise >= 0.0 and self.noise < float("inf")):
            raise InvalidArgumentError(
                f"post-processing noise must be a finite number >= 0 (e.g. noise=1e-5), got {self.noise!r}",
                argument="postprocess",
                value=self.noise,
            )

    @property
    def is_identity(self) -> bool:
        return self == PostProcess()

    def drops_only(self) -> PostProcess:
        """The same spec less every step that reads or changes values: what it leaves out, nothing else.

        A dry run has no values (its tensors are on the meta device); this is what it can apply.
        """
        return PostProcess(**{attr: getattr(self, attr) for attr in _DROPS.values()})

    def __str__(self) -> str:
        parts = (["orth"] if self.orthogonal else []) + ([f"noise={self.noise:g}"] if self.noise else [])
        parts += [token for token, attr in _SWITCHES.items() if getattr(self, attr)]
        parts += [token for token, attr in _DROPS.items() if getattr(self, attr)]
        return "+".join(parts) or "none"

    @classmethod
    def parse(cls, spec: Union[str, PostProcess, None]) -> PostProcess:
        """Read a spec: ``"none"``, or parts joined by ``+`` (``"orth+noise"``): ``"orth"``, ``"noise"`` (beta
        1e-5), ``"noise=1e-4"``, ``"dcbalance"``, ``"detile"``, ``"keepnorm"``, ``"nohead"``, ``"nobias"``,
        ``"nogain"``, ``"nonorm"``, ``"noembed"`` (:data:`POSTPROCESS_PARTS`).

        Raises:
            ValueError: an unknown or repeated part, with the accepted forms.
        """
        if spec is None:
            return cls()
        if isinstance(spec, PostProcess):
            return spec
        if not isinstance(spec, str):
            raise InvalidArgumentTypeError(
                f"postprocess must be a string ('orth+noise', 'none') or a PostProcess, got {type(spec).__name__}",
                argument="postprocess",
                value=spec,
            )
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
                    value = float(match["beta"]) if match["beta"] is not None else NOISE_BETA
                except ValueError:
                    value = float("nan")  # refused below with what to pass
                if not 0.0 <= value < float("inf"):
                    raise InvalidArgumentError(
                        f"post-processing {part!r} in {spec!r}: noise's beta must be a finite number >= 0, e.g. "
                        "noise=1e-5",
                        argument="postprocess",
                        value=spec,
                    )
            elif part in _SWITCHES:
                key, value = _SWITCHES[part], True
            elif part in _DROPS:
                key, value = _DROPS[part], True
            else:
                key, value = part, None
            if value is None:
                raise InvalidArgumentError(
                    f"unknown post-processing {part!r} in {spec!r}; use 'none' or parts joined by '+': "
                    f"{', '.join(POSTPROCESS_PARTS)} (e.g. 'orth+noise')",
                    argument="postprocess",
                    value=spec,
                )
            if key in values:
                raise InvalidArgumentError(
                    f"post-processing {spec!r} names {part!r} twice", argument="postprocess", value=spec
                )
            values[key] = value
        return cls(**values)


def _as_matrix(w: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """``w`` as a tall 2-D matrix (rows >= columns) and whether it was transposed."""
    m = w.reshape(w.shape[0], -1)
    if m.shape[0] < m.shape[1]:
        return m.t(), True
    return m, False


def _work_dtype(w: torch.Tensor) -> torch.dtype:
    """The dtype post-processing computes in: float64 for a float64 tensor, float32 for every other."""
    return torch.float64 if w.dtype == torch.float64 else torch.float32


def _column_major(m: torch.Tensor) -> torch.Tensor:
    """A 2-D matrix laid out as LAPACK reads it (columns contiguous): ``m`` itself if it is, else a copy.

    ``torch.linalg.qr`` makes that copy itself when it has to, but more slowly: 10% of the QR of a
    row-major 3072 x 768 float32 matrix on one thread (0.092 s vs 0.082 s with the copy made here).
    """
    return m if m.t().is_contiguous() else m.t().contiguous().t()


def _orthonormal_factor(m: torch.Tensor) -> torch.Tensor:
    """``Q`` of the QR of a tall matrix, signs fixed so that ``diag(R) >= 0`` (a zero diagonal keeps its sign)."""
    q, r = torch.linalg.qr(_column_major(m))
    sign = torch.sign(torch.diagonal(r))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    return q * sign if q.requires_grad else q.mul_(sign)  # in place unless autograd keeps q for the gradient


def _finish(q: torch.Tensor, transposed: bool, like: torch.Tensor) -> torch.Tensor:
    """A tall factor back in the shape, orientation and dtype of ``like``.

    The dtype first (it keeps the layout), then the layout: a strided write converting dtype too costs 5x
    ``contiguous()``'s blocked transpose (0.013 s vs 0.0026 s for a 3072 x 768 float32 to float16 on one thread).
    """
    q = (q.t() if transposed else q).to(like.dtype)
    return q.contiguous().view(like.shape)


def orthogonalize(w: torch.Tensor) -> torch.Tensor:
    """The orthonormal QR factor of a weight, in its shape and dtype.

    Args:
        w: a weight of two or more dimensions, seen as ``(w.shape[0], -1)``.

    Returns:
        A tensor like ``w`` whose rows (if it has fewer rows than columns) or columns are
        orthonormal, with the sign of each direction fixed so that ``diag(R) > 0``. Differentiable
        (QR of a tall matrix has a gradient), so a GHN can be trained through it
        (``ghn-init train --postprocess orth``).

    Example:
        >>> q = orthogonalize(torch.randn(8, 4, 3, 3)).reshape(8, -1)
        >>> torch.allclose(q @ q.t(), torch.eye(8), atol=1e-5)
        True
    """
    if w.dim() < 2:
        raise ValueError(f"orthogonalize needs a tensor of 2 or more dimensions, got shape {tuple(w.shape)}")
    m, transposed = _as_matrix(w.to(_work_dtype(w)))
    return _finish(_orthonormal_factor(m), transposed, w)


def balance_dc(w: torch.Tensor) -> torch.Tensor:
    """Give each ``k x k`` kernel's spatial mean the share of energy it has in an isotropic kernel.

    A weight ``W`` of shape ``(out, in, kh, kw)`` splits into its spatial mean ``D`` (each kernel's
    average, broadcast over its ``kh * kw`` taps) and the rest ``A = W - D``; the two are orthogonal,
    so ``||W||^2 = ||D||^2 + ||A||^2``. For kernels with i.i.d. entries (default and orthogonal
    init) ``D`` carries ``1 / (kh * kw)`` of the energy. The result is ``alpha * D + A`` with
    ``alpha`` chosen so that ``D`` carries exactly that share again:

        alpha**2 * ||D||^2 / (alpha**2 * ||D||^2 + ||A||^2) = 1 / n,  n = kh * kw
        =>  alpha = sqrt(||A||^2 / ((n - 1) * ||D||^2)).

    Why: the published decoders emit a ``k x k`` kernel as the same per-pixel MLP applied at each
    of the ``k x k`` positions of a map, so the MLP's last bias and the positive mean of its ReLU
    hidden layer add one constant to every tap. Predicted ``3 x 3`` kernels are therefore mostly
    spatially flat (blurs): 58% of their energy is in ``D`` for a randomly initialized GHN and
    still 50-63% for the bundled one, against 11% for an isotropic kernel; ``orth`` keeps that
    (41-48% in resnet18's first stage). Worked example: a ``3 x 3`` kernel ``[[1, 1, 1], [1, 2, 1],
    [1, 1, 1]]`` has ``D = 10/9`` everywhere and ``A = 8/9`` at the centre, ``-1/9`` elsewhere;
    ``||D||^2 = 100/9``, ``||A||^2 = 8/9``, so ``alpha = sqrt((8/9) / (8 * 100/9)) = 0.1`` and the
    result is ``0.1 * D + A = [[0, 0, 0], [0, 1, 0], [0, 0, 0]]``: a single tap, whose mean holds
    1/9 of its energy like any isotropic kernel's; the kernel's shape (a peak at the centre) is kept.

    Ours, not from the papers; the whole tensor shares one ``alpha``, which only ever shrinks the
    flat part (``alpha < 1``): a tensor whose flat part holds ``1 / n`` of the energy or less is
    returned unchanged, as are tensors of fewer than four dimensions, ``1 x 1`` kernels and
    kernels that are entirely flat. Computed in float32 (float64 for a float64 ``w``).

    Args:
        w: a weight, ``(out, in, kh, kw)`` for a 2-D convolution.

    Returns:
        A new tensor like ``w`` (or ``w`` itself when unchanged).

    Example:
        >>> w = torch.ones(1, 1, 3, 3); w[0, 0, 1, 1] = 2
        >>> balance_dc(w)[0, 0].round(decimals=4).abs()
        tensor([[0., 0., 0.],
                [0., 1., 0.],
                [0., 0., 0.]])
    """
    x = w.to(_work_dtype(w))
    balanced = _balanced(x)
    return w if balanced is x else balanced.to(w.dtype)


def _balanced(x: torch.Tensor) -> torch.Tensor:
    """:func:`balance_dc` in ``x``'s own dtype: a new tensor, or ``x`` itself when unchanged."""
    if x.dim() != 4 or x.shape[2] * x.shape[3] <= 1:
        return x
    n = x.shape[2] * x.shape[3]
    flat = x.mean(dim=(2, 3), keepdim=True)
    rest = x - flat
    flat_energy = flat.square().sum() * n
    rest_energy = torch.linalg.vector_norm(rest).square()
    if rest_energy == 0 or flat_energy * (n - 1) <= rest_energy:
        return x  # all flat (nothing would remain), or no excess to remove
    alpha = (rest_energy / ((n - 1) * flat_energy)).sqrt()
    return rest + flat * alpha if rest.requires_grad else rest.add_(flat * alpha)  # alpha * D + A (in scratch A)


def detile(
    w: torch.Tensor, block: Sequence[int], generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """Replace the tiled copies in a predicted weight by random values with the predicted block's spread.

    A GHN's decoder emits at most ``block = (out, in)`` channels (its config's ``max_shape[:2]``, 64 x 64
    for the bundled GHN and the published GHN-3s); a wider layer gets that block repeated along both
    channel dimensions (as published). The copies are no prediction, and they tie weights together:
    in a ``(128, 128, 3, 3)`` layer every filter weights input channels ``c`` and ``c + 64`` the same,
    which orthogonalization does not undo (the rows of ``[B B]`` stay of that form). Worked example for
    resnet18 and the bundled GHN: after ``orth`` the weights on input channels ``c`` and ``c + 64``
    correlate at 0.48 in ``layer2.0.conv2`` (0.23 in ``layer3``, 0.11 in ``layer4``); with ``detile``
    only ``w[:64, :64]`` (the prediction) is kept and the rest is ``std(w[:64, :64]) * z`` with ``z`` a
    standard normal draw of ``w``'s whole shape.

    Ours, not from the papers. ``z`` is drawn on the CPU in float32 from ``generator`` (default: torch's
    global generator) and then moved, so a seed gives the same tensor on every device; a float64 ``w``
    keeps its predicted block in float64. In :func:`postprocess` the same ``z`` also gives the predicted
    block its noise (one draw per tensor).

    Args:
        w: a predicted weight, ``(out, in, ...)``.
        block: the decoder's ``(out, in)`` channels; dimensions not larger than it are kept.

    Returns:
        A new tensor like ``w``, or ``w`` itself when it fits in the block.

    Example:
        >>> w = torch.arange(4.0).view(2, 2).repeat(2, 2)   # a 2x2 block tiled to 4x4
        >>> out = detile(w, (2, 2), torch.Generator().manual_seed(0))
        >>> torch.equal(out[:2, :2], w[:2, :2]), torch.equal(out[2:, 2:], w[2:, 2:])
        (True, False)
    """
    rows, cols = _block_of(w, block)
    if (rows, cols) == tuple(w.shape[:2]):
        return w
    x = w.to(_work_dtype(w))
    filled, _ = _filled(x, rows, cols, _draw(x, generator))
    return filled.to(w.dtype)


def _block_of(w: torch.Tensor, block: Sequence[int]) -> tuple[int, int]:
    """The ``(rows, cols)`` of ``w`` a decoder of ``block`` channels predicted (the rest are tiled copies)."""
    return min(w.shape[0], block[0]), min(w.shape[1], block[1])


def _draw(x: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    """A standard normal tensor of ``x``'s shape, drawn on the CPU in float32, then in ``x``'s device and dtype."""
    return torch.randn(x.shape, generator=generator, dtype=torch.float32).to(device=x.device, dtype=x.dtype)


def _filled(x: torch.Tensor, rows: int, cols: int, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x``'s predicted block ``x[:rows, :cols]`` in a new tensor filled elsewhere with ``std(block) * z``.

    Returns the new tensor and the block's standard deviation (a 0-d tensor)."""
    kept = x[:rows, :cols]
    spread = kept.std()
    filled = z * spread
    filled[:rows, :cols] = kept
    return filled, spread


#: A tall matrix with more rows than this has its noise scale estimated from this many of them
#: (:func:`relative_noise_scale`'s ``max_rows``), as :func:`postprocess` does.
NOISE_SCALE_ROWS = 256
_SPREAD_PRIME = 2_147_483_647  # prime: (i * P) mod n visits distinct rows for every n < P


def _spread_rows(n: int, k: int) -> torch.Tensor:
    """``k`` distinct indices of ``range(n)``, ``(i * P) mod n`` for a prime ``P``, scattered across every residue.

    Not a stride ``n // k``: in a tall matrix of a conv's weight the rows are (input channel, tap) pairs,
    ``tap = row % (kh * kw)``, and a stride that is a multiple of ``kh * kw`` would take one tap only (resnet50's
    ``layer4`` 3 x 3 convs: 4608 rows, stride 18, every row tap 0). No random draw, so no generator is touched.
    """
    return torch.arange(k, dtype=torch.int64).mul_(_SPREAD_PRIME % n).remainder_(n)


def relative_noise_scale(w: torch.Tensor, max_rows: Optional[int] = None) -> float:
    """Standard deviation of the correlation coefficients between the rows of ``w`` as a tall matrix.

    With ``M`` the rows centred and scaled to unit norm (``n`` rows, ``c`` columns, rows >= columns), the
    ``n * n`` coefficients are ``M M^T``; their sum is ``||M^T 1||^2`` and the sum of their squares
    ``||M M^T||_F^2 = ||M^T M||_F^2``, so only the smaller Gram matrix is needed, and only its upper triangle
    of column blocks is computed (each off-diagonal block counted twice). Rows with zero variance have no
    correlation and are left out (``torch.corrcoef`` gives NaN). Computed in float32 (float64 only for a
    float64 ``w``): a float64 Gram matrix cost 7x as much, and the two agree to 1e-7 relative.

    With ``max_rows`` (what :func:`postprocess` uses: :data:`NOISE_SCALE_ROWS`), a matrix of more rows is
    measured on ``max_rows`` of them (:func:`_spread_rows`): the mean and mean square of the off-diagonal
    coefficients come from the rows taken, and the ``n`` diagonal ones (each exactly 1) are counted for
    all ``n`` rows, so the estimate has the full matrix's share of them. For ``k`` rows of ``c`` columns
    this costs ``k * c * min(k, c)`` multiply-adds against the QR's ``2 * n * c**2``: 1.4% for resnet50's
    ``layer4`` 3 x 3 convs (``n = 4608``, ``c = 512``, ``k = 256``), where the full Gram matrix cost a
    quarter of the QR. Measured against the exact value (``tests/test_postprocess.py``): within 0.1-0.4% for
    random, low-rank and correlated matrices, 4% for a tiled convolution and 11% for mostly flat 3 x 3 kernels
    (rows clustered by input channel, so a few pairs carry the spread); it only sets a ``1e-5`` noise level.

    Example:
        >>> w = torch.randn(50, 7, generator=torch.Generator().manual_seed(0))
        >>> abs(relative_noise_scale(w) - torch.corrcoef(w).flatten().std().item()) < 1e-6
        True
    """
    m = w.detach().reshape(w.shape[0], -1)
    dim = 1 if m.shape[0] >= m.shape[1] else 0  # the tall matrix's rows: m's rows, or its columns if m is wide
    rows = m.shape[1 - dim]
    sampled = max_rows is not None and rows > max_rows
    if sampled:
        m = m.index_select(1 - dim, _spread_rows(rows, max_rows).to(m.device))
    # Reduced along m's own layout (a reduction or broadcast across the contiguous dimension of a transposed
    # view costs up to 10x), centred in the work dtype straight from m's (type promotion: one pass).
    x = torch.sub(m, m.mean(dim, keepdim=True, dtype=_work_dtype(w)))
    if x.stride(dim) == 1:
        norms = torch.linalg.vector_norm(x, dim=dim, keepdim=True)
    else:  # vector_norm across rows is 10x slower than this
        norms = x.square().sum(dim, keepdim=True).sqrt()
    k = int((norms > 0).sum())
    if k < 2:
        return 0.0
    x.mul_(norms.clamp_min_(torch.finfo(x.dtype).tiny).reciprocal_())  # dead rows are 0 and stay 0: they add nothing
    x = x if dim == 1 else x.t()  # the (taken) rows of the tall matrix, as rows
    total = float(x.sum(0).square().sum())  # sum of all (taken) correlation coefficients
    squares = float(_gram_square_sum(x if x.shape[0] >= x.shape[1] else x.t()))  # sum of their squares
    if sampled:  # off-diagonal mean and mean square from the rows taken; n diagonal ones for all n rows
        pairs = k * (k - 1)
        n = rows * k / x.shape[0]  # live rows, estimated
        total = (n * n - n) * (total - k) / pairs + n
        squares = (n * n - n) * (squares - k) / pairs + n
        count = n * n
    else:
        count = k * k
    var = (squares - total * total / count) / (count - 1)
    return max(var, 0.0) ** 0.5


def _gram_square_sum(x: torch.Tensor) -> torch.Tensor:
    """``||x^T x||_F^2`` from the upper triangle of column blocks of ``x^T x`` (blocks of about 128 columns)."""
    cols = x.shape[1]
    blocks = max(1, min(8, cols // 128))
    if blocks == 1:
        return torch.linalg.vector_norm(x.t() @ x).square()
    edges = [round(i * cols / blocks) for i in range(blocks + 1)]
    total = x.new_zeros(())
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        g = x[:, a:b].t() @ x[:, a:]  # rows a:b of x^T x, from its diagonal block rightwards
        total += g[:, : b - a].square().sum() + 2 * g[:, b - a :].square().sum()
    return total


def _exactly_one(factor: float, dtype: torch.dtype) -> bool:
    """Whether multiplying by ``factor`` leaves every value of ``dtype`` unchanged: ``|factor - 1| < eps / 4``."""
    return abs(factor - 1.0) < torch.finfo(dtype).eps / 4


def _post_matrix(
    w: torch.Tensor, pp: PostProcess, block: Optional[Sequence[int]], generator: Optional[torch.Generator],
    norm: Optional[float],
) -> tuple[torch.Tensor, float]:
    """One weight matrix through ``pp``'s steps; returns it (in ``w``'s dtype) and its noise scale.

    Every step computes in float32 (float64 for a float64 ``w``) and the result is rounded to ``w``'s dtype
    once, at the end. One standard normal draw ``z`` of ``w``'s shape serves ``detile`` and the noise:

    - not tiled: ``x + alpha * z`` (``alpha = beta * relative_noise_scale(x)``);
    - tiled (``detile``, a layer wider than the decoder's ``block``): the predicted block gets
      ``alpha * z[block]`` and the filled copies ``sqrt(std(block)**2 + alpha**2) * z``, the distribution of a
      fill ``std(block) * z`` plus independent noise ``alpha * z'`` (the noise scale measured on the filled
      matrix before the noise, as two separate steps would).
    """
    x = w.to(_work_dtype(w)).contiguous()  # any layout of the prediction: the same values
    x = _balanced(x) if pp.balance_dc else x
    rows, cols = _block_of(x, block) if pp.detile else tuple(x.shape[:2])
    tiled = (rows, cols) != tuple(x.shape[:2])
    z = _draw(x, generator) if tiled or pp.noise else None
    spread = None
    if tiled:
        x, spread = _filled(x, rows, cols, z)
    scale = relative_noise_scale(x, NOISE_SCALE_ROWS) if pp.noise else 0.0
    alpha = pp.noise * scale
    if alpha > 0:
        if tiled:  # x is ours: the fill is widened, the block gets its noise
            std = float(spread.detach())
            inflate = (1.0 + (alpha / std) ** 2) ** 0.5 if std > 0 else 1.0
            if not _exactly_one(inflate, x.dtype):  # float32 predictions: inflate rounds to 1, no pass needed
                kept = x[:rows, :cols].clone()
                x = x * inflate
                x[:rows, :cols] = kept
            x[:rows, :cols] += alpha * z[:rows, :cols]
        else:
            x = torch.add(x, z, alpha=alpha)
    if pp.orthogonal:
        m, transposed = _as_matrix(x)
        q = _orthonormal_factor(m)
        if pp.keep_norm and norm:
            q = q * (norm / q.norm().clamp_min(1e-30))
        return _finish(q, transposed, w), scale
    if pp.keep_norm and norm:
        x = x * (norm / x.norm().clamp_min(1e-30))
    return x.to(w.dtype), scale


def postprocess(
    predicted: Mapping[str, torch.Tensor],
    spec: Union[str, PostProcess, None],
    *,
    order: Optional[Iterable[str]] = None,
    classifier: Optional[str] = None,
    roles: Optional[Mapping[str, Role]] = None,
    generator: Optional[torch.Generator] = None,
    block: Optional[Sequence[int]] = None,
    norms: Optional[Mapping[str, float]] = None,
) -> dict[str, torch.Tensor]:
    """Post-process predicted tensors; a pure function (the inputs are not modified).

    Args:
        predicted: tensor name -> predicted tensor (names as in ``model.named_parameters()``).
        spec: a :class:`PostProcess` or its string form (see :meth:`PostProcess.parse`).
        order: the names in the model's order (default: the order of ``predicted``); a gain or
            norm bias gets the noise scale of the last weight matrix before it.
        classifier: the name of the classification weight, left as predicted together with the
            tensors after it in ``order`` (as published); None to post-process every tensor.
        roles: tensor name -> :class:`Role`; names not in it get :func:`role_of` (their shape).
        generator: the CPU generator of the random draws (default: torch's global one): one standard
            normal draw of each tensor's shape, for the noise and ``detile``'s values together, in ``order``.
            Drawn on the CPU in float32 and then moved, so a seed gives the same values on every device.
        block: the GHN decoder's ``(out, in)`` channels, which ``detile`` needs (a ``ValueError`` without it).
        norms: tensor name -> the Frobenius norm ``keepnorm`` scales a matrix to (the model's own
            tensor's); a matrix not in it, or with norm 0, keeps its scale.

    Returns:
        A new dict with the same keys, less those dropped (``nohead``, ``nobias``, ``nogain``,
        ``nonorm``, ``noembed``); tensors that were not changed are the same objects. Only
        matrices are orthogonalized; only matrices, gains and norm biases get noise (as published:
        biases of convolutions and linear layers do not); each tensor keeps its dtype and device.
        Each step computes in float32 (float64 for float64 tensors); a tensor is rounded to its dtype
        once, at the end.

    Example:
        >>> out = postprocess({"conv.weight": torch.randn(4, 2, 3, 3)}, "orth")
        >>> out["conv.weight"].shape
        torch.Size([4, 2, 3, 3])
    """
    pp = PostProcess.parse(spec)
    result = dict(predicted)
    if pp.is_identity:
        return result
    if pp.detile and block is None:
        raise ValueError("post-processing 'detile' needs the GHN decoder's block size (block=(out, in))")
    names = [n for n in (order if order is not None else predicted) if n in predicted]
    if order is not None:
        listed = set(names)
        names += [n for n in predicted if n not in listed]
    roles = roles or {}
    dropped = {
        Role.BIAS: pp.drop_biases,
        Role.GAIN: pp.drop_gains or pp.drop_norms,
        Role.NORM_BIAS: pp.drop_norms,
        Role.EMBEDDING: pp.drop_embeddings,
        Role.MATRIX: False,
    }
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
        role = roles.get(name) or role_of(w, name)
        if dropped[role]:
            del result[name]
            continue
        if role is Role.MATRIX:
            norm = (norms or {}).get(name)
            if pp.orthogonal or pp.noise or pp.balance_dc or pp.detile or (pp.keep_norm and norm):
                result[name], noise_scale = _post_matrix(w, pp, block, generator, norm)
            else:  # nothing changes its values: the same object, not a copy through float32
                noise_scale = 0.0
        elif role in (Role.GAIN, Role.NORM_BIAS) and pp.noise and noise_scale > 0:
            x = w.to(_work_dtype(w))  # gains and norm biases: the noise scale of the matrix before them
            result[name] = torch.add(x, _draw(x, generator), alpha=pp.noise * noise_scale).to(w.dtype)
    return result


def roles_of(predicted: Mapping[str, tuple]) -> dict[str, Role]:
    """The :class:`Role` of each predicted tensor, read off the module and attribute it is written to.

    Args:
        predicted: tensor name -> (slot, tensor) as ``apply`` holds them; a slot has ``.module``,
            ``.attr`` and ``.is_weight`` (:class:`ghn_init.planning.Slot`).

    Example: in a torchvision ViT, ``encoder.pos_embedding`` is an ``EMBEDDING`` although it has
    three dimensions; in a ConvNeXt block, ``layer_scale`` (``(C, 1, 1)``) is a ``GAIN``, not a
    matrix; a ``LayerNorm``'s weight and bias are ``GAIN`` and ``NORM_BIAS``, a ``Linear``'s bias a ``BIAS``.
    """
    roles = {}
    for name, (slot, tensor) in predicted.items():
        module_weight = module_tensor(slot.module, "weight")
        is_norm = module_weight is not None and module_weight.dim() == 1
        if slot.attr == "pos_embedding":
            roles[name] = Role.EMBEDDING
        elif slot.attr == "layer_scale":
            roles[name] = Role.GAIN
        elif slot.is_weight and tensor.dim() >= 2:
            roles[name] = Role.MATRIX
        elif tensor.dim() == 1 and is_norm:
            roles[name] = Role.GAIN if slot.is_weight else Role.NORM_BIAS
        elif not slot.is_weight:
            roles[name] = Role.BIAS
        else:
            roles[name] = role_of(tensor, name)
    return roles


def postprocess_predictions(
    model: torch.nn.Module,
    predicted: Mapping[str, tuple],
    spec: Union[str, PostProcess, None],
    generator: Optional[torch.Generator] = None,
    *,
    classifier: Sequence[str] = (),
    block: Optional[Sequence[int]] = None,
) -> dict[str, tuple]:
    """:func:`postprocess` for one model's predictions as ``apply`` holds them: name -> (slot, tensor).

    The model is only read: its parameter order, the role of each tensor (:func:`roles_of`) and, for
    ``keepnorm``, the norm of each tensor it holds now.

    Args:
        model: the model the predictions are for.
        predicted: tensor name -> (slot, tensor); a slot has ``.module``.
        spec: see :meth:`PostProcess.parse`.
        generator: see :func:`postprocess`.
        classifier: the classifier's tensors, weight first, as the plan decodes them
            (:meth:`ghn_init.Plan.classifier`: the ones ``predict_classifier=False`` keeps), placed last in
            the order so that exactly they are the head; empty: no head.
        block: the GHN decoder's ``(out, in)`` channels (``GHNConfig.max_shape[:2]``), for ``detile``.

    Returns:
        A new dict name -> (slot, post-processed tensor), less the dropped tensors.
    """
    pp = PostProcess.parse(spec)
    if pp.is_identity:
        return dict(predicted)
    head = list(classifier)
    order = [name for name, _ in model.named_parameters() if name not in head] + head
    roles = roles_of(predicted)
    matrices = {name: slot for name, (slot, _) in predicted.items() if roles[name] is Role.MATRIX}
    tensors = postprocess(
        {name: t for name, (_, t) in predicted.items()},
        pp,
        order=order,
        classifier=head[0] if head else None,
        roles=roles,
        generator=generator,
        block=block,
        norms=_current_norms(matrices) if pp.keep_norm else None,
    )
    return {name: (slot, tensors[name]) for name, (slot, _) in predicted.items() if name in tensors}


def _current_norms(slots: Mapping[str, Any]) -> dict[str, float]:
    """Name -> Frobenius norm of the tensor the model holds in that slot now (read, never changed)."""
    norms = {}
    for name, slot in slots.items():
        current = slot.tensor
        if current is not None and current.device.type != "meta":
            norms[name] = float(current.detach().float().norm())
    return norms
