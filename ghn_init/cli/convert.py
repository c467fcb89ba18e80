"""``ghn-init convert``: a GHN checkpoint (pickle) to a safetensors folder with config.json and a model card."""

from __future__ import annotations

import argparse


def _cmd_convert(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..hub.checkpoints import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME
    from ..hub.convert import convert

    if Path(args.dst_dir).exists() and not Path(args.dst_dir).is_dir():
        raise FileExistsError(f"{args.dst_dir} is a file; DST_DIR must be a folder (it is created if missing)")

    dst = convert(args.src, args.dst_dir, revision=args.revision, repo_id=args.repo_id, license=args.license)
    for name in (WEIGHTS_NAME, CONFIG_NAME, CARD_NAME):
        print(f"wrote {dst / name} ({(dst / name).stat().st_size:,} bytes)")
    print(
        f"load it with ghn_init.load_ghn({str(dst)!r}); "
        f"publish it with `ghn-init push {dst} {args.repo_id or 'OWNER/REPO'}`"
    )
    return 0


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "convert", help="convert a GHN checkpoint (pickle) into a safetensors folder with config.json and a model card"
    )
    p.add_argument("src", help="registry name, local checkpoint, hf://owner/repo/file, or 'bundled'")
    p.add_argument("dst_dir", help="folder to write model.safetensors, config.json and README.md into")
    p.add_argument("--revision", default=None, help="Hub revision of SRC (branch, tag or commit; default: main)")
    p.add_argument(
        "--repo-id",
        default=None,
        help="Hub repo the folder will be uploaded to (for the card's usage example; default: none)",
    )
    p.add_argument("--license", default=None, help="license id for the card (default: the source's, else 'other')")
    p.set_defaults(func=_cmd_convert)
