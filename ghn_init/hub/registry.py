"""Short names for the published GHNs: where each file lives, its format, and what is known about it.

Every fact below cites where it comes from, so a wrong one can be traced and fixed:
- GHN-3 files: Hugging Face Hub repo ``SamsungSAILMontreal/ghn3`` (model card: license MIT, arXiv
  2303.04143); sizes and hashes from the Hub's file pages where those were available; file names and the
  joblib format from ``ghn3/nn.py:from_pretrained`` in github.com/SamsungSAILMontreal/ghn3 (commit b3289ac).
- GHN-2 files of ppuda: github.com/facebookresearch/ppuda ``checkpoints/`` (README, "Available GHNs").
  They are not on the Hub, so ghn-init cannot download them; pass the local path of a copy.
"""

from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

GHN3_REPO = "SamsungSAILMontreal/ghn3"
GHN3_PAPER = (
    "Knyazev, Hwang, Lacoste-Julien. Can We Scale Transformers to Predict Parameters of Diverse ImageNet "
    "Models? ICML 2023. https://arxiv.org/abs/2303.04143"
)
GHN2_PAPER = (
    "Knyazev, Drozdzal, Taylor, Romero-Soriano. Parameter Prediction for Unseen Deep Architectures. "
    "NeurIPS 2021. https://arxiv.org/abs/2110.13100"
)
PPUDA_CHECKPOINTS = "https://github.com/facebookresearch/ppuda/blob/main/checkpoints"

# The Hub's own revision history, read from its commit pages: ghn3sm8.pt and ghn3lm8.pt were added in this
# commit ("add ghn3s/m8 and ghn3l/m8", 2023-04-04) and the file page of ghn3lm8.pt on main still shows it as
# the file's last commit. No commit is known for the other files, so they follow "main".
GHN3_SM8_LM8_COMMIT = "2a46e7d33d9bc9cdb63d0b39f40e40fb8bc93cf7"

DEFAULT_GHN = "ghn3-xl-m16"  # the best published GHN (ICML 2023); a ~2.5 GB download on first use


@dataclass(frozen=True)
class RegistryEntry:
    """One published GHN checkpoint and the facts ghn-init relies on when loading and checking it."""

    name: str
    title: str
    kind: str  # "ghn3" or "ghn2"
    filename: str  # path inside the Hub repo (or inside the upstream GitHub repo when repo_id is None)
    file_format: str  # "joblib" (pickled state dict) or "torch.save" (ppuda archive)
    repo_id: Optional[str]  # Hub repo; None when the file is only distributed outside the Hub
    revision: str  # default revision to download; a commit hash where one is known
    revision_note: str
    upstream_url: str  # human-readable page of the file
    size: str  # approximate download size, with its source
    size_bytes: Optional[int]  # exact size where the Hub states it
    sha256: Optional[str]  # LFS hash where the Hub states it
    parameters: str  # approximate number of GHN parameters, with how it was obtained
    trained_on: str
    license: str
    paper: str
    results_key: Optional[str]  # key prefix in ghn3_results.jsonl used by `ghn-init verify`, if published

    @property
    def on_hub(self) -> bool:
        return self.repo_id is not None

    @property
    def download_size(self) -> Optional[str]:
        """The size without its source, e.g. "about 2.5 GB"; None when unknown."""
        short = self.size.split(" (")[0]
        return None if short == "unknown" else short

    @property
    def hf_url(self) -> Optional[str]:
        return f"hf://{self.repo_id}/{self.filename}" if self.repo_id else None

    def local_only_hint(self) -> str:
        """What to do for a GHN that ghn-init cannot download."""
        local_name = Path(self.filename).name
        return (
            f"{self.name} ({self.title}) is distributed in a GitHub repository, not on the Hugging Face Hub, "
            f"so ghn-init cannot download it. Download {local_name} from {self.upstream_url} and pass its path: "
            f"ghn_init.load_ghn('/path/to/{local_name}') or `--ghn /path/to/{local_name}`."
        )


def _ghn3(name: str, title: str, filename: str, **facts: object) -> RegistryEntry:
    defaults: dict[str, object] = dict(
        kind="ghn3",
        file_format="joblib",
        repo_id=GHN3_REPO,
        revision="main",
        revision_note="no commit known for this file: follows the Hub repo's main branch",
        upstream_url=f"https://huggingface.co/{GHN3_REPO}/blob/main/{filename}",
        size_bytes=None,
        sha256=None,
        trained_on="ImageNet-1k (1000 classes) on DeepNets-1M architectures",
        license="mit",
        paper=GHN3_PAPER,
        results_key=None,
    )
    defaults.update(facts)
    return RegistryEntry(name=name, title=title, filename=filename, **defaults)  # type: ignore[arg-type]


REGISTRY: dict[str, RegistryEntry] = {
    entry.name: entry
    for entry in (
        _ghn3(
            "ghn3-xl-m16",
            "GHN-3-XL/m16",
            "ghn3xlm16.pt",
            size="about 2.5 GB (ghn3 README)",
            parameters="about 0.6 billion (2.5 GB of float32)",
            results_key="ghn3",
        ),
        _ghn3(
            "ghn3-l-m8",
            "GHN-3-L/m8",
            "ghn3lm8.pt",
            revision=GHN3_SM8_LM8_COMMIT,
            revision_note="pinned to the Hub commit that added the file (2a46e7d, 2023-04-04)",
            upstream_url=f"https://huggingface.co/{GHN3_REPO}/blob/{GHN3_SM8_LM8_COMMIT}/ghn3lm8.pt",
            size="859 MB (Hub file page)",
            size_bytes=858_730_839,
            sha256="e43b6903799a1d8f8b1a90274d729beb9052a1accdebb6d96b51c8d79337d7a5",
            parameters="about 215 million (file size / 4 bytes)",
        ),
        _ghn3(
            "ghn3-s-m8",
            "GHN-3-S/m8",
            "ghn3sm8.pt",
            revision=GHN3_SM8_LM8_COMMIT,
            revision_note="pinned to the Hub commit that added the file (2a46e7d, 2023-04-04)",
            upstream_url=f"https://huggingface.co/{GHN3_REPO}/blob/{GHN3_SM8_LM8_COMMIT}/ghn3sm8.pt",
            size="143 MB (Hub commit 2a46e7d)",
            size_bytes=143_269_744,
            sha256="b6101fd4dbba98ee34a1abf70888e5f3866a0bd75b0acf4ef23e07cb4918fa6d",
            parameters="about 36 million (file size / 4 bytes)",
        ),
        _ghn3(
            "ghn3-t-m8",
            "GHN-3-T/m8",
            "ghn3tm8.pt",
            size="about 27 MB (ghn3 README)",
            parameters="6.9 million (6,906,632, counted from a file with the same keys and shapes)",
            results_key="ghn3-t",
        ),
        _ghn3(
            "ghn2",
            "GHN-2 (trained by the GHN-3 authors)",
            "ghn2.pt",
            kind="ghn2",
            size="unknown",
            parameters="unknown",
            trained_on="ImageNet-1k (its figures in ghn3_results.jsonl are ImageNet results)",
            paper=f"{GHN2_PAPER}; used as a baseline in {GHN3_PAPER}",
            results_key="ghn2",
        ),
        RegistryEntry(
            name="ghn2-imagenet",
            title="GHN-2-ImageNet (ppuda)",
            kind="ghn2",
            filename="checkpoints/ghn2_imagenet.pt",
            file_format="torch.save",
            repo_id=None,
            revision="main",
            revision_note="GitHub repository file; not downloadable by ghn-init",
            upstream_url=f"{PPUDA_CHECKPOINTS}/ghn2_imagenet.pt",
            size="a few MB (ppuda README)",
            size_bytes=None,
            sha256=None,
            parameters="unknown",
            trained_on="ImageNet-1k on DeepNets-1M architectures",
            license="mit",
            paper=GHN2_PAPER,
            results_key=None,
        ),
        RegistryEntry(
            name="ghn2-cifar10",
            title="GHN-2-CIFAR-10 (ppuda)",
            kind="ghn2",
            filename="checkpoints/ghn2_cifar10.pt",
            file_format="torch.save",
            repo_id=None,
            revision="main",
            revision_note="GitHub repository file; not downloadable by ghn-init",
            upstream_url=f"{PPUDA_CHECKPOINTS}/ghn2_cifar10.pt",
            size="a few MB (ppuda README)",
            size_bytes=None,
            sha256=None,
            parameters="unknown",
            trained_on="CIFAR-10 (10 classes) on DeepNets-1M architectures",
            license="mit",
            paper=GHN2_PAPER,
            results_key=None,
        ),
    )
}


def get_entry(name: str) -> RegistryEntry:
    """The registry entry called ``name``, or a KeyError listing the names that exist."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"no GHN called {name!r} in the registry; known names: {', '.join(REGISTRY)}") from None


@dataclass(frozen=True)
class GHNInfo:
    """A registered GHN and whether its file is already in the local Hugging Face cache.

    Every fact of the registry entry is a flat attribute (``info.name``, ``info.size``, ``info.kind``,
    ``info.hf_url``, ...), next to ``info.cached`` and ``info.cached_path``; ``info.entry`` is the entry itself.
    """

    entry: RegistryEntry
    cached_path: Optional[Path]

    @property
    def cached(self) -> bool:
        return self.cached_path is not None

    def __getattr__(self, name: str) -> Any:
        # called only for names GHNInfo itself lacks: the entry's fields and properties
        if name.startswith("__") or name == "entry":
            raise AttributeError(name)
        try:
            return getattr(self.entry, name)
        except AttributeError:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}") from None

    def __dir__(self) -> list[str]:
        entry_names = set(RegistryEntry.__dataclass_fields__) | {"on_hub", "hf_url", "download_size"}
        return sorted(set(super().__dir__()) | entry_names)

    def to_dict(self) -> dict[str, object]:
        return {
            **asdict(self.entry),
            "cached": self.cached,
            "cached_path": str(self.cached_path) if self.cached_path else None,
        }


def cached_path(entry: RegistryEntry, revision: Optional[str] = None) -> Optional[Path]:
    """Where the cache holds ``entry``'s file for ``revision`` (default: the entry's), without any network call."""
    if entry.repo_id is None:
        return None
    from .download import HubFile, cached_file

    return cached_file(HubFile(entry.repo_id, entry.filename, revision or entry.revision))


def list_ghns(pattern: Union[str, Sequence[str], None] = None) -> list[GHNInfo]:
    """The registered GHNs whose name matches ``pattern``, with their cache state (never the network).

    Args:
        pattern: a shell-style wildcard (``fnmatch``, like ``timm.list_models``), e.g. ``"ghn3*"``, or a list
            of them (a name matching any is listed); None lists every GHN.

    Returns:
        One :class:`GHNInfo` per GHN, in registry order, with flat attributes (``.name``, ``.size``,
        ``.cached``, ``.kind``, ``.hf_url``, ...).

    Raises:
        TypeError: ``pattern`` is not a string or a list of strings.

    Example:
        >>> import ghn_init
        >>> [info.name for info in ghn_init.list_ghns("ghn3-[ts]*")]
        ['ghn3-s-m8', 'ghn3-t-m8']
    """
    if pattern is None:
        patterns: list[str] = ["*"]
    elif isinstance(pattern, str):
        patterns = [pattern]
    elif isinstance(pattern, (list, tuple)) and all(isinstance(p, str) for p in pattern):
        patterns = list(pattern)
    else:
        raise TypeError(f"pattern must be a string like 'ghn3*' or a list of them, got {type(pattern).__name__}")
    return [
        GHNInfo(entry, cached_path(entry))
        for entry in REGISTRY.values()
        if any(fnmatch.fnmatchcase(entry.name, p) for p in patterns)
    ]
