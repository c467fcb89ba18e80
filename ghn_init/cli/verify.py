"""``ghn-init verify``: predicted parameter norms against the figures the GHN-3 authors published."""

from __future__ import annotations

import argparse
import sys

from ..hub.registry import DEFAULT_GHN
from ..verify import DEFAULT_MODELS, TOLERANCE
from .types import finite_float


def _cmd_verify(args: argparse.Namespace) -> int:
    from ..errors import HubDownloadError
    from ..verify import format_table, verify

    try:
        rows = verify(args.ghn, args.models, revision=args.revision, results_key=args.results_key)
    except HubDownloadError as e:
        print(f"ghn-init verify: error: cannot get what the check needs from the Hub: {e}", file=sys.stderr)
        return 2
    print(format_table(rows, args.tolerance))
    compared = [r for r in rows if r.ok(args.tolerance) is not None]
    failed = [r.model for r in compared if not r.ok(args.tolerance)]
    print(f"\n{len(compared) - len(failed)}/{len(compared)} within {args.tolerance:g} of the published norm")
    if failed:
        print(
            "mismatch: " + ", ".join(failed) + ". Expected only where 'predicted' is below 100% "
            "(those tensors keep their random init); otherwise the predictions differ from the published GHN's."
        )
    return 1 if failed else 0


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "verify", help="compare predicted parameter norms of torchvision models with the published GHN-3 figures"
    )
    p.add_argument("--ghn", default=None, help=f"registry name with published figures (default {DEFAULT_GHN})")
    p.add_argument(
        "--models", nargs="+", default=None, help=f"torchvision names, or 'all' (default: {' '.join(DEFAULT_MODELS)})"
    )
    p.add_argument("--revision", default=None, help="Hub revision of the GHN checkpoint (default: main)")
    p.add_argument(
        "--results-key",
        default=None,
        help="figures to compare with (ghn3, ghn3-t, ghn2) for a non-registry --ghn (default: the registry entry's)",
    )
    p.add_argument(
        "--tolerance",
        type=finite_float,
        default=TOLERANCE,
        help="largest absolute difference of norms accepted (default %(default)s)",
    )
    p.set_defaults(func=_cmd_verify)
