"""Model cards of GHN folders: a ``README.md`` with Hugging Face metadata, built with ``huggingface_hub.ModelCard``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence, Union

from ..constants import CARD_NAME

if TYPE_CHECKING:
    from huggingface_hub import ModelCard

LIBRARY_NAME = "ghn-init"
CARD_TAGS = ("graph-hypernetwork", "parameter-prediction", "initialization", "pytorch", "safetensors")


def make_card(body: str, *, license: str, tags: Sequence[str] = CARD_TAGS) -> ModelCard:
    """A model card: ``body`` (Markdown) under YAML metadata (license, ``library_name: ghn-init``, tags).

    Args:
        body: the card's Markdown text, starting with its title.
        license: a Hub license identifier (``"mit"``, ``"other"``, ...).
        tags: Hub tags.

    Returns:
        A ``huggingface_hub.ModelCard``; ``str(card)`` is the README text, ``card.save(path)`` writes it.

    Example:
        >>> card = make_card("# My GHN\\n", license="mit")
        >>> card.data.library_name, card.data.license
        ('ghn-init', 'mit')
    """
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(license=license, library_name=LIBRARY_NAME, tags=list(tags))
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body.lstrip()}")


def save_card(card: ModelCard, folder: Union[str, Path]) -> Path:
    """Write ``card`` as ``folder/README.md`` and return that path."""
    path = Path(folder) / CARD_NAME
    card.save(path)
    return path
