"""Convert a GHN checkpoint into a safetensors folder: the format ghn-init loads fastest and publishes.

The published GHN files are pickles, which are slow to read and can run code when read carelessly. A
converted folder holds
- ``model.safetensors``: the GHN's tensors in ghn-init's state-dict layout (``ghn.state_dict()``);
- ``config.json``: ``{"ghn": GHNConfig.to_dict(), "format_version": 1, "source": ...}``;
- ``README.md``: a Hugging Face model card (license, source, paper, usage).
``load_ghn(folder)`` (or ``hf://owner/repo`` once uploaded) reads it without unpickling anything.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence, Union

from ..constants import VIRTUAL_EDGE_CUTOFF
from ..networks import GHN
from .card import make_card, save_card
from .checkpoints import save_folder
from .download import HF_SCHEME
from .registry import GHN2_PAPER, GHN3_PAPER, REGISTRY, RegistryEntry

if TYPE_CHECKING:
    from huggingface_hub import ModelCard

_KIND_TITLES = {"ghn3": "GHN-3", "ghn2": "GHN-2"}
REPO_PLACEHOLDER = "OWNER/REPO"  # replaced by the real repo id in cards written with one (and by hub/upload.py)

_FIELD_NOTES = {
    "kind": "ghn3: Graphormer layers (GHN-3); ghn2: gated GNN (GHN-2)",
    "hid": "node embedding size",
    "layers": "Graphormer layers (GHN-3)",
    "heads": "attention heads (GHN-3)",
    "max_shape": "largest (out, in, h, w) block the decoder predicts; bigger tensors are tiled",
    "num_classes": "classes of the classification layer it predicts",
    "layernorm": "layer norm on node embeddings before decoding",
    "weight_norm": "fan-in normalization of predicted weights",
    "virtual_edges": f"virtual edges between nodes up to {VIRTUAL_EDGE_CUTOFF} hops apart",
}


def convert(
    src: Union[str, Path, GHN],
    dst_dir: Union[str, Path],
    *,
    revision: Optional[str] = None,
    repo_id: Optional[str] = None,
    license: Optional[str] = None,
) -> Path:
    """Write ``src`` (anything :func:`ghn_init.load_ghn` accepts) as a safetensors folder at ``dst_dir``.

    ``repo_id`` is the Hub repo the folder is meant for (used in the card's usage example); ``license``
    defaults to the registry's for published GHNs and to "other" (to be set by hand) otherwise.
    """
    from . import load_ghn

    entry = REGISTRY.get(src) if isinstance(src, str) else None
    ghn = load_ghn(src, revision=revision)
    source = describe_source(src, ghn, entry, revision)
    extra = {k: v for k, v in ghn.config.extra.items() if k != "source"}
    config = dataclasses.replace(ghn.config, extra={**extra, "source": source})

    dst = save_folder(ghn, dst_dir, config=config, source=source)
    if license:
        license_note = "as given when converting"
    elif entry:
        license, license_note = entry.license, "as the source checkpoint"
    else:
        license, license_note = "other", "the source's license is unknown to ghn-init: set it before publishing"
    dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in ghn.state_dict().values()})
    save_card(
        model_card(
            config.to_dict(),
            title=f"{entry.title if entry else _KIND_TITLES[config.kind]} for ghn-init",
            source=source,
            license=license,
            license_note=license_note,
            paper=entry.paper if entry else (GHN3_PAPER if config.kind == "ghn3" else GHN2_PAPER),
            repo_id=repo_id,
            weights=f"{ghn.num_parameters():,} parameters, {'/'.join(dtypes)}",
            notes=registry_notes(entry) if entry else (),
        ),
        dst,
    )
    return dst


def describe_source(
    src: Union[str, Path, GHN], ghn: GHN, entry: Optional[RegistryEntry], revision: Optional[str]
) -> str:
    """Where the weights came from, without local paths (they mean nothing on the Hub)."""
    if entry is not None:
        return f"{entry.hf_url}@{revision or entry.revision}".removesuffix("@main")
    text = (
        str(ghn.config.extra.get("source") or ghn.config.extra.get("name") or "") if isinstance(src, GHN) else str(src)
    )
    if text.startswith(HF_SCHEME):
        return text + (f"@{revision}" if revision and "@" not in text else "")
    if text == "bundled":
        return "the GHN bundled with ghn-init"
    return Path(text).name or "a GHN built in Python"


def registry_notes(entry: RegistryEntry) -> list[str]:
    """Facts about a published GHN for its model card: the original file, its size and hash, what verify checks."""
    return [
        f"Original file: [{entry.filename}]({entry.upstream_url}) in `{entry.repo_id}`, {entry.file_format} format, "
        f"{entry.size}"
        + (f", sha256 `{entry.sha256}`" if entry.sha256 else "")
        + f"; revision: {entry.revision_note}.",
        f"Parameters: {entry.parameters}. Trained on {entry.trained_on}.",
        f"`ghn-init verify --ghn {entry.name}` checks its predictions against the `{entry.results_key}-paramnorm` "
        "figures the authors publish in `ghn3_results.jsonl`."
        if entry.results_key
        else "The authors publish no parameter-norm figures for this GHN, so `ghn-init verify` cannot check it.",
    ]


def model_card(
    config: Optional[Mapping[str, Any]],
    *,
    title: str,
    source: str,
    license: str,
    license_note: str,
    paper: str,
    repo_id: Optional[str] = None,
    weights: str = "float32",
    notes: Sequence[str] = (),
) -> ModelCard:
    """A Hugging Face model card for a converted GHN; ``config=None`` points readers to ``config.json`` instead."""
    repo = repo_id or REPO_PLACEHOLDER
    if config is None:
        configuration = (
            "The hyperparameters are in `config.json`, read from the checkpoint's tensor shapes at conversion."
        )
    else:
        rows = "\n".join(
            f"| `{name}` | {_cell(config.get(name))} | {meaning} |" for name, meaning in _FIELD_NOTES.items()
        )
        configuration = f"| field | value | meaning |\n|---|---|---|\n{rows}"
    extra_notes = "".join(f"- {note}\n" for note in notes)
    body = f"""# {title}

A Graph HyperNetwork (GHN) that predicts the parameters of PyTorch vision models (torchvision, timm or your
own), to initialize them before training. This repository holds it in the format the ghn-init
package loads directly: `model.safetensors` ({weights}; no pickled code)
and `config.json` (its hyperparameters).

- Source: `{source}`. The tensors are those of the source checkpoint, unchanged, in ghn-init's state-dict layout.
- Paper: {paper}
- License: {license} ({license_note}).
{extra_notes}
## Usage

```python
import torchvision
import ghn_init

model = torchvision.models.resnet50()
report = ghn_init.apply(model, ghn="hf://{repo}")  # predicts the parameters in place
print(report)
```

From the command line: `ghn-init apply resnet50 --ghn hf://{repo}`. A local copy of this folder works the
same way: `ghn_init.apply(model, ghn="path/to/folder")`.

## Configuration

{configuration}

## How it was made

`ghn-init convert {source} DST_DIR` loads the source checkpoint (a pickle is read by ghn-init's restricted
unpickler, which accepts only tensors and plain containers) and writes `model.safetensors`, `config.json` and
this card. `ghn-init verify` compares the parameter norms it predicts for torchvision models with the figures
the GHN-3 authors published, where they published some for this GHN.

## Limitations

The predicted parameters are an initialization: they give a model a better start than random init for
fine-tuning, not a trained model. Their accuracy without training is low (see the paper).
"""
    return make_card(body, license=license)


def _cell(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(str(v) for v in value) + ")"
    return str(value).lower() if isinstance(value, bool) else str(value)
