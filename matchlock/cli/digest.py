"""``matchlock digest FOLDER``: print the folder digest a piece's ``folder_sha256`` expects.

Prints the hex digest alone on one line, so scripts can capture it.
"""

from __future__ import annotations

import argparse

from matchlock.downloads.folder_digest import folder_digest

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``digest`` to the command line."""
    parser = subparsers.add_parser(
        "digest",
        help="print the digest of an installed folder (for folder_sha256)",
        description="Print the platform-neutral sha256 of FOLDER (see docs/folder-digest.md).",
    )
    parser.add_argument("folder", metavar="FOLDER", help="the folder to digest")
    parser.set_defaults(func=run_digest)


def run_digest(args: argparse.Namespace) -> int:
    """Print the folder's digest."""
    print(folder_digest(args.folder))
    return 0
