"""``matchlock fingerprint ROOM.json``: print the content fingerprint of a room config.

The fingerprint (:mod:`matchlock.core.fingerprint`) is what a game compares at its netplay handshake
and records in its replays. Printed alone on one line (the short form), so a launcher captures
it; ``--full`` prints the 64 hex digits; ``--json`` prints one object with both.
It does not check signatures (``matchlock room verify`` does): it only reads the pinned content.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from matchlock.app.configfile import load_room_config
from matchlock.core.fingerprint import content_fingerprint

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``fingerprint`` to the command line."""
    parser = subparsers.add_parser(
        "fingerprint",
        help="print the content fingerprint of a room (for the game's handshake)",
        description="Print the short content fingerprint of the pieces ROOM.json pins "
        "(see docs/ikemen-go.md): the same on every member's machine.",
    )
    parser.add_argument("room", metavar="ROOM.json", type=Path)
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument("--full", action="store_true", help="print all 64 hex digits")
    shown.add_argument(
        "--json",
        action="store_true",
        help='print {"type": "fingerprint", "room_id", "fingerprint": {"short", "full", "pieces"}}',
    )
    parser.set_defaults(func=run_fingerprint)


def run_fingerprint(args: argparse.Namespace) -> int:
    """Print the room's fingerprint in the form asked for."""
    room = load_room_config(args.room)
    fingerprint = content_fingerprint(room)
    if args.json:
        payload = {
            "type": "fingerprint",
            "room_id": room.room_id,
            "fingerprint": fingerprint.as_json(),
        }
        print(json.dumps(payload))
    else:
        print(fingerprint.full if args.full else fingerprint.short)
    return 0
