"""``matchlock statecharts``: regenerate (or check) the exported machines in statecharts/."""

from __future__ import annotations

import argparse
from pathlib import Path

from matchlock.tools.statecharts import check_statecharts, write_statecharts


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``statecharts`` sub-command."""
    parser = commands.add_parser(
        "statecharts",
        help="export the piece, member and room machines (Mermaid and JSON)",
        description="Write each state machine as Mermaid (.mmd) and JSON into a folder.",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("statecharts"), help="folder (default: statecharts)"
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the files differ from the code"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the statecharts, or with ``--check`` report the ones that drifted."""
    if args.check:
        stale = check_statecharts(args.out)
        for name in stale:
            print(f"{args.out / name}: differs from the code; run `matchlock statecharts`")
        return 1 if stale else 0
    for path in write_statecharts(args.out):
        print(path)
    return 0
