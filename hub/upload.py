"""Upload a GHN folder written by ``ghn-init convert`` to a Hugging Face Hub model repo.

    ghn-init convert ghn3-t-m8 build/ghn3-t-m8
    python hub/upload.py build/ghn3-t-m8 --repo-id ORG/ghn3-t-m8 --name ghn3-t-m8 --dry-run
    python hub/upload.py build/ghn3-t-m8 --repo-id ORG/ghn3-t-m8 --name ghn3-t-m8

Before anything leaves the machine the folder is loaded with ghn-init (so a broken folder is never
published) and, with ``--name``, its config is checked against the template ``hub/NAME/config.json`` and
the curated card ``hub/NAME/README.md`` replaces the generic one. ``--dry-run`` prints what would be
uploaded and contacts nobody. The token comes from ``HF_TOKEN`` or ``hf auth login``, as for any
``huggingface_hub`` upload.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

HUB_DIR = Path(__file__).resolve().parent
REPO_PLACEHOLDER = "OWNER/REPO"  # ghn_init.hub.convert.REPO_PLACEHOLDER, in cards written without a repo id
UPLOADED = ("model.safetensors", "config.json", "README.md")

# What we publish: each name has a card and config template in hub/NAME/.
PUBLISHED: dict[str, str] = {
    "ghn3-t-m8": "GHN-3-T/m8, converted from SamsungSAILMontreal/ghn3 ghn3tm8.pt",
    "ghn3-s-m8": "GHN-3-S/m8, converted from SamsungSAILMontreal/ghn3 ghn3sm8.pt",
    "ghn3-l-m8": "GHN-3-L/m8, converted from SamsungSAILMontreal/ghn3 ghn3lm8.pt",
    "ghn3-xl-m16": "GHN-3-XL/m16, converted from SamsungSAILMontreal/ghn3 ghn3xlm16.pt",
    "ghn2": "GHN-2, converted from SamsungSAILMontreal/ghn3 ghn2.pt",
    # ghn-init's own GHN: the training engineer writes hub/bundled/README.md and hub/bundled/config.json.
    "bundled": "the GHN trained for and bundled with ghn-init",
}


class UploadError(Exception):
    """The folder is not ready to be published; the message says why."""


def config_mismatches(config: dict[str, Any], template: dict[str, Any]) -> list[str]:
    """Fields the template states (non-null) that the converted config contradicts, with the template's source."""
    provenance = template.get("provenance", {})
    problems = []
    for field, expected in template["ghn"].items():
        if field == "extra" or expected is None:
            continue
        actual = config["ghn"].get(field)
        if actual != expected:
            problems.append(
                f"{field}: converted {actual!r}, template {expected!r} ({provenance.get(field, 'no source')})"
            )
    return problems


def prepare(folder: Path, repo_id: str, name: Optional[str]) -> dict[str, bytes | Path]:
    """The files to upload: ``{name in repo: path of the file, or bytes of the filled-in card}``."""
    from ghn_init.hub import load_ghn

    for filename in ("model.safetensors", "config.json"):
        if not (folder / filename).is_file():
            raise UploadError(f"{folder} has no {filename}; write the folder with `ghn-init convert SRC {folder}`")
    config = json.loads((folder / "config.json").read_text())
    if config.get("format_version") != 1:
        raise UploadError(f"{folder / 'config.json'} has format_version {config.get('format_version')!r}, expected 1")
    try:
        load_ghn(folder)
    except (ValueError, OSError) as e:
        raise UploadError(f"{folder} does not load as a GHN: {e}") from e

    card_path = folder / "README.md"
    if name is not None:
        if name not in PUBLISHED:
            raise UploadError(f"unknown --name {name!r}; published GHNs: {', '.join(PUBLISHED)}")
        template_path, card_path = HUB_DIR / name / "config.json", HUB_DIR / name / "README.md"
        if not card_path.is_file() or not template_path.is_file():
            raise UploadError(
                f"hub/{name}/ has no README.md and config.json yet ({PUBLISHED[name]}); write them first, "
                "or leave out --name to upload the card `ghn-init convert` wrote"
            )
        problems = config_mismatches(config, json.loads(template_path.read_text()))
        if problems:
            raise UploadError(f"{folder} does not hold {name}:\n  " + "\n  ".join(problems))
    if not card_path.is_file():
        raise UploadError(f"no model card at {card_path}; convert the GHN again with `ghn-init convert`")
    card = card_path.read_text().replace(f"hf://{REPO_PLACEHOLDER}", f"hf://{repo_id}")
    return {
        "model.safetensors": folder / "model.safetensors",
        "config.json": folder / "config.json",
        "README.md": card.encode(),
    }


def stage(files: dict[str, bytes | Path], staging: Path) -> None:
    """Lay the files out in ``staging``: weights hard-linked (no copy of gigabytes) where the filesystem allows."""
    for name, content in files.items():
        target = staging / name
        if isinstance(content, bytes):
            target.write_bytes(content)
            continue
        try:
            os.link(content, target)
        except OSError:
            shutil.copyfile(content, target)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="folder written by `ghn-init convert`")
    parser.add_argument("--repo-id", required=True, help="Hub model repo to upload to, e.g. ORG/ghn3-t-m8")
    parser.add_argument(
        "--name", default=None, help=f"published GHN this is, for its card and config check: {', '.join(PUBLISHED)}"
    )
    parser.add_argument("--revision", default=None, help="branch to commit to (default: main)")
    parser.add_argument("--private", action="store_true", help="create the repo as private if it does not exist")
    parser.add_argument("--commit-message", default=None)
    parser.add_argument("--dry-run", action="store_true", help="print what would be uploaded and stop")
    args = parser.parse_args(argv)

    try:
        files = prepare(args.folder, args.repo_id, args.name)
    except UploadError as e:
        print(f"upload: {e}", file=sys.stderr)
        return 1
    message = args.commit_message or f"Upload {args.name or args.folder.name} converted with ghn-init"
    where = f"{args.repo_id} (branch {args.revision or 'main'})"
    print(f"{'would upload' if args.dry_run else 'uploading'} to {where}: {message!r}")
    for name, content in files.items():
        size = len(content) if isinstance(content, bytes) else content.stat().st_size
        print(
            f"  {name:<18} {size:>15,d} bytes" + ("  (card with the repo id filled in)" if name == "README.md" else "")
        )
    if args.dry_run:
        print("dry run: nothing was uploaded")
        return 0

    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(args.repo_id, repo_type="model", private=args.private, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ghn-upload-") as staging:
        stage(files, Path(staging))
        commit = api.upload_folder(
            repo_id=args.repo_id,
            folder_path=staging,
            commit_message=message,
            revision=args.revision,
            allow_patterns=list(UPLOADED),
        )
    print(f"uploaded: {commit.commit_url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
