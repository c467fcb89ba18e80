"""``ghn-init push``: publish a GHN folder (from ``ghn-init train`` or ``convert``) on the Hugging Face Hub."""

from __future__ import annotations

import argparse


def _cmd_push(args: argparse.Namespace) -> int:
    from ..hub.push import PUSHED_FILES, push_to_hub

    info = push_to_hub(
        args.folder,
        args.repo_id,
        revision=args.revision,
        private=args.private,
        commit_message=args.commit_message,
        create_pr=args.create_pr,
    )
    print(f"pushed {', '.join(PUSHED_FILES)} from {args.folder} to {args.repo_id}: {info.commit_url}")
    if info.pr_url:
        print(f"pull request: {info.pr_url}")
    else:
        at = "" if args.revision in (None, "main") else f"@{args.revision}"
        print(f"load it with ghn_init.load_ghn('hf://{args.repo_id}{at}') or `--ghn hf://{args.repo_id}{at}`")
    return 0


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    from ..hub.push import DEFAULT_COMMIT_MESSAGE

    p = subparsers.add_parser(
        "push",
        help="publish a GHN folder (model.safetensors, config.json, README.md) on the Hugging Face Hub",
        description="Check that FOLDER loads as a GHN and has a model card, create the Hub repo REPO_ID if missing, "
        "and upload model.safetensors, config.json and README.md in one commit (nothing else from FOLDER). The token "
        "comes from HF_TOKEN or `hf auth login`; HF_ENDPOINT selects another Hub.",
    )
    p.add_argument(
        "folder", metavar="FOLDER", help="GHN folder: OUT/ghn of `ghn-init train OUT`, or DST_DIR of `ghn-init convert`"
    )
    p.add_argument("repo_id", metavar="REPO_ID", help="Hub model repo to push to, OWNER/NAME (created if missing)")
    p.add_argument("--revision", default=None, help="branch to commit to, created if missing (default: main)")
    p.add_argument(
        "--private",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="create the repo as private (--private) or public (--no-private); ignored if the repo exists "
        "(default: the Hub's default for OWNER)",
    )
    p.add_argument(
        "--create-pr",
        action="store_true",
        help="open a pull request with the commit instead of committing to the branch (default: off)",
    )
    p.add_argument(
        "--commit-message", default=None, help=f"summary of the commit (default: {DEFAULT_COMMIT_MESSAGE!r})"
    )
    p.set_defaults(func=_cmd_push)
