"""``ghn-init list``: the published GHNs, their sizes and cache state."""

from __future__ import annotations

import argparse
import json


def _cmd_list(args: argparse.Namespace) -> int:
    from ..hub import DEFAULT_GHN, list_ghns

    infos = list_ghns(args.pattern or None)
    if not infos:
        raise ValueError(f"no registered GHN matches {' '.join(args.pattern)!r}; `ghn-init list` shows them all")
    if args.json:
        print(json.dumps([info.to_dict() for info in infos], indent=1))
        return 0
    rows = [("name", "size", "cached", "verify", "where")]
    for info in infos:
        e = info.entry
        where = e.hf_url if e.on_hub else f"local file only: download {e.upstream_url}"
        if e.on_hub and e.revision != "main":
            where += f"@{e.revision}"
        state = "yes" if info.cached else ("-" if e.on_hub else "n/a")
        rows.append(
            (e.name + (" (default)" if e.name == DEFAULT_GHN else ""), e.size, state, e.results_key or "-", where)
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1])
    print(
        "\nuse one with `ghn-init apply MODEL --ghn NAME` or ghn_init.apply(model, ghn=NAME); "
        "ghn='bundled' needs no download"
    )
    return 0


def add_subcommand(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("list", help="list the published GHNs, their sizes and whether they are cached")
    p.add_argument("pattern", nargs="*", help="only names matching these wildcards, e.g. 'ghn3*' (fnmatch)")
    p.add_argument("--json", action="store_true", help="print the registry and cache state as JSON")
    p.set_defaults(func=_cmd_list)
