"""``matchlock digest FOLDER [--pin]``: print the folder digest a piece's ``folder_sha256`` expects.

Prints the hex digest alone on one line, so scripts can capture it. With ``--pin``, prints the
folder pin of a folder-only piece as one JSON object, ``{"folder_sha256": ..., "folder_size":
...}`` (``folder_size``: the sum of its files' sizes), ready to paste into a match-lock config.
"""

from __future__ import annotations

import argparse
import json

from matchlock.downloads.folder_digest import folder_digest
from matchlock.downloads.folder_stream import folder_pin

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``digest`` to the command line."""
    parser = subparsers.add_parser(
        "digest",
        help="print the digest of an installed folder (for folder_sha256)",
        description="Print the platform-neutral sha256 of FOLDER (see docs/folder-digest.md).",
    )
    parser.add_argument("folder", metavar="FOLDER", help="the folder to digest")
    parser.add_argument(
        "--pin",
        action="store_true",
        help='print {"folder_sha256": ..., "folder_size": ...} for a folder-only piece',
    )
    parser.set_defaults(func=run_digest)


def run_digest(args: argparse.Namespace) -> int:
    """Print the folder's digest (or, with ``--pin``, its folder pin as JSON)."""
    if not args.pin:
        print(folder_digest(args.folder))
        return 0
    digest, size = folder_pin(args.folder)
    print(json.dumps({"folder_sha256": digest, "folder_size": size}))
    return 0
