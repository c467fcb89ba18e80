"""Write a trained GHN as a self-describing folder: weights, config with provenance, model card."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..constants import WEIGHTS_NAME
from ..hub.card import make_card, save_card
from ..hub.checkpoints import save_folder
from ..networks import GHN

if TYPE_CHECKING:
    from huggingface_hub import ModelCard


def _format_metric(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _bases(provenance: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(source, training record or {}) of each GHN a fine-tuned GHN started from, nearest first."""
    found, base = [], provenance.get("fine_tuned_from")
    while base:
        training = base.get("training") or {}
        found.append((base["source"], training))
        base = training.get("fine_tuned_from")
    return found


def lineage(provenance: dict[str, Any]) -> list[str]:
    """Card lines for the GHNs a fine-tuned GHN started from, and the steps in all (none when trained from scratch)."""
    lines, bases = [], _bases(provenance)
    for source, training in bases:
        line = f"- fine-tuned from `{source}`"
        if training:
            command = training.get("command") or "ghn_init.train.train(...) (Python API)"
            line += (
                f", which was trained for {training.get('steps')} steps "
                f"({training.get('train_seconds', 0) / 60:.1f} min on {training.get('device')}): `{command}`"
            )
        else:
            line += " (no training record: a published or converted GHN)"
        lines.append(line)
    earlier = sum(training.get("steps", 0) for _, training in bases)
    if earlier:
        lines.append(f"- steps in all, with the GHNs it was fine-tuned from: {provenance['steps'] + earlier}")
    return lines


def model_card(ghn: GHN, provenance: dict[str, Any], num_bytes: int) -> ModelCard:
    """A model card that says what the GHN was trained on, for how long, and how good it measured.

    Its license is "other": whoever trained the GHN sets it (the data's license may constrain it).
    """
    cfg = ghn.config
    data, archs, metrics = provenance["data"], provenance["architectures"], provenance["final_metrics"]
    lines = [
        f"# {cfg.kind.upper()} trained with ghn-init",
        "",
        f"A {cfg.kind.upper()} graph hypernetwork ({ghn.num_parameters():,} parameters, hid {cfg.hid}, "
        f"max_shape {list(cfg.max_shape)}, {cfg.num_classes} classes; {num_bytes / 2**20:.1f} MiB on disk) "
        "that predicts all parameters of image classifiers from their computational graph.",
        "",
        "## How it was produced",
        "",
        f"- command: `{provenance['command'] or 'ghn_init.train.train(...) (Python API)'}`",
        f"- steps: {provenance['steps']} (meta-batch {provenance['settings']['meta_batch']} architectures x "
        f"batch {provenance['settings']['batch_size']} images per step), seed {provenance['seed']}",
        f"- optimizer: AdamW lr {provenance['settings']['lr']}, weight decay {provenance['settings']['weight_decay']}, "
        f"{provenance['settings']['warmup_steps']} warmup steps then cosine decay, gradient clip "
        f"{provenance['settings']['grad_clip']}",
        *(
            f"- extended: at step {e['at_step']} the run went from {e['from_steps']} to {e['to_steps']} steps; the "
            f"learning rate followed the {e['to_steps']}-step schedule from there"
            for e in provenance.get("extensions", [])
        ),
        f"- training time: {provenance['train_seconds'] / 60:.1f} min on {provenance['device']} "
        f"x {provenance['world_size']} process(es)",
        *lineage(provenance),
        *(
            [f"- trained through post-processing `{provenance['settings']['postprocess']}`: the loss is that of "
             "the networks `apply` writes with it, not of the raw predictions"]
            if provenance["settings"].get("postprocess", "none") != "none"
            else []
        ),
        f"- data: {data['name']} ({data['num_classes']} classes, {data['image_size']}x{data['image_size']} "
        f"images; {data['train_images']} for training, {data['val_images']} held out)",
        f"- architectures: a pool of {archs['pool_size']} from {archs['generator']}, width <= {archs['max_width']}, "
        f"<= {archs['max_cells']} cells"
        + (
            f", {archs['torchvision_fraction']:.0%} shrunk torchvision nets "
            f"({', '.join(archs['torchvision_families'])})"
            if archs["torchvision_fraction"]
            else ""
        ),
        "",
        "## Measured quality",
        "",
        "Predicted parameters, no fine-tuning, held-out architectures on held-out images "
        "(normalisation layers use batch statistics):",
        "",
        "| metric | value |",
        "|---|---|",
        *(f"| {key} | {_format_metric(value)} |" for key, value in metrics.items()),
        "",
        "## Use",
        "",
        "```python",
        "import ghn_init",
        "ghn = ghn_init.load_ghn('path/to/this/folder')",
        "ghn_init.apply(model, ghn)",
        "```",
        "",
    ]
    return make_card("\n".join(lines), license="other")


def export_folder(ghn: GHN, folder: Path, provenance: dict[str, Any], dtype: torch.dtype = torch.float32) -> Path:
    """``model.safetensors`` (``dtype``), ``config.json`` ({"format_version", "ghn", "training"}), ``README.md``."""
    save_folder(ghn, folder, dtype=dtype, training=provenance)
    weights = folder / WEIGHTS_NAME
    save_card(model_card(ghn, provenance, weights.stat().st_size), folder)
    return folder
