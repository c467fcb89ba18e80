"""Check a GHN against the figures its authors published: total parameter norms of predicted torchvision models.

The GHN-3 Hub repo publishes, next to its checkpoints, ``ghn3_results.jsonl``: for each torchvision model the
total L2 norm of ``model.parameters()`` after predicting them with ``ghn3xlm16.pt`` (``ghn3-paramnorm``),
``ghn3tm8.pt`` (``ghn3-t-paramnorm``) and ``ghn2.pt`` (``ghn2-paramnorm``). The published code treats a norm
within 1e-2 of that figure as a correct prediction; ``verify`` applies the same test to ghn-init's predictions.
A mismatch can also come from tensors a GHN does not predict (they keep their random init), so the table
shows the fraction of parameters predicted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn

from .errors import HubDownloadError, HubFileNotFoundError
from .hub.download import HubFile, discard_cached, download
from .hub.registry import DEFAULT_GHN, GHN3_REPO, REGISTRY
from .networks import GHN

# The Hub file; then the name the published ghn3 code (get_metadata) requests, which holds the same lines.
RESULTS_FILES = ("ghn3_results.jsonl", "ghn3_results.json")
RESULTS_REVISION = "main"
TOLERANCE = 1e-2  # absolute, as in the published norm check
MODEL_SEED = 0  # seeds each model's default init, so tensors the GHN leaves alone are reproducible
DEFAULT_MODELS = ("resnet50", "mobilenet_v3_small", "efficientnet_b0", "squeezenet1_0", "vit_b_16")


@dataclass
class VerifyRow:
    """One model: our predicted parameter norm against the published one."""

    model: str
    ours: float
    published: Optional[float]
    fraction_predicted: float

    @property
    def diff(self) -> Optional[float]:
        return None if self.published is None else self.ours - self.published

    def ok(self, tolerance: float = TOLERANCE) -> Optional[bool]:
        return None if self.diff is None else abs(self.diff) < tolerance


def param_norm(model: nn.Module) -> float:
    """Total L2 norm over ``model.parameters()``, computed as the published check does."""
    return torch.norm(torch.stack([p.detach().norm() for p in model.parameters()]), 2).item()


def results_key_for(ghn: Union[str, GHN, None]) -> str:
    """Which published figures apply to a registry GHN (``ghn3``, ``ghn3-t`` or ``ghn2``)."""
    name = DEFAULT_GHN if ghn is None else ghn
    with_figures = [f"{n} ({e.results_key})" for n, e in REGISTRY.items() if e.results_key]
    entry = REGISTRY.get(name) if isinstance(name, str) else None
    if entry is None:
        raise ValueError(
            f"no published figures are known for {name!r}; they exist for {', '.join(with_figures)}. "
            "To compare another source (a converted folder, an hf:// URL) with one of them, pass results_key."
        )
    if entry.results_key is None:
        raise ValueError(
            f"the GHN-3 authors published no parameter norms for {name}; they did for {', '.join(with_figures)}"
        )
    return entry.results_key


def published_norms(results_key: str, *, revision: str = RESULTS_REVISION) -> dict[str, float]:
    """``{torchvision model: published total parameter norm}`` for ``results_key``, fetched from the Hub repo."""
    file, path = _download_results(revision)
    field = f"{results_key}-paramnorm"
    try:
        records: dict[str, dict] = {}
        for line in path.read_text().splitlines():
            if line.strip():
                records.update(json.loads(line))
        norms = {model: float(values[field]) for model, values in records.items() if field in values}
    except (ValueError, TypeError, AttributeError) as e:
        discard_cached(path)
        raise ValueError(
            f"{file.describe()} is not the expected JSON lines file ({e}); the cached copy was removed, "
            "run again to download it again"
        ) from e
    if not norms:
        raise ValueError(f"{file.describe()} has no '{field}' figures; known keys are ghn3, ghn3-t and ghn2")
    return norms


def _download_results(revision: str) -> tuple[HubFile, Path]:
    """The published results file (the first of :data:`RESULTS_FILES` the repo has) and its local path.

    Raises:
        HubDownloadError: it cannot be fetched; the message says how to get it (not to pass it as ``--ghn``:
            it holds figures, not a GHN).
    """
    for filename in RESULTS_FILES:
        file = HubFile(GHN3_REPO, filename, revision)
        try:
            return file, download(file)
        except HubFileNotFoundError:
            if filename == RESULTS_FILES[-1]:
                raise
        except HubDownloadError as e:
            why = str(e).split(" To fix: ")[0].rstrip(".")
            raise HubDownloadError(
                f"the published figures ({why}); verify compares with them: run it once with network access "
                "(the file is then cached for offline runs)",
                file=file,
            ) from e
    raise AssertionError("unreachable")  # the loop returns or raises


def verify(
    ghn: Union[str, GHN, None] = None,
    models: Optional[Sequence[str]] = None,
    *,
    revision: Optional[str] = None,
    results_key: Optional[str] = None,
) -> list[VerifyRow]:
    """Predict parameters for torchvision ``models`` with ``ghn`` and pair each norm with the published one.

    ``models=None`` checks :data:`DEFAULT_MODELS`; ``["all"]`` every model in the results file. The published
    figures are fetched before the GHN is loaded, so a missing network fails fast.
    """
    import torchvision

    from .api import apply
    from .hub import load_ghn

    norms = published_norms(results_key or results_key_for(ghn))
    names = sorted(norms) if models and list(models) == ["all"] else list(models or DEFAULT_MODELS)
    net = load_ghn(ghn, revision=revision)
    rows = []
    for name in names:
        torch.manual_seed(MODEL_SEED)
        model = torchvision.models.get_model(name)
        report = apply(model, net, postprocess="none")  # the published figures are of raw predictions
        rows.append(VerifyRow(name, param_norm(model), norms.get(name), report.fraction_predicted))
    return rows


def format_table(rows: Sequence[VerifyRow], tolerance: float = TOLERANCE) -> str:
    lines = [f"{'model':<22} {'ours':>10} {'published':>10} {'diff':>9} {'predicted':>9}  ok"]
    for r in rows:
        ok = r.ok(tolerance)
        published = "-" if r.published is None else f"{r.published:.4f}"
        diff = "-" if r.diff is None else f"{r.diff:+.4f}"
        mark = "no figure" if ok is None else ("yes" if ok else "NO")
        lines.append(f"{r.model:<22} {r.ours:>10.4f} {published:>10} {diff:>9} {r.fraction_predicted:>8.1%}  {mark}")
    return "\n".join(lines)
