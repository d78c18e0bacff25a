"""``matchlock lan list [--json] [--wait S]``: the rooms hosts on this network announce now.

Asks every network this machine is on (see :mod:`matchlock.transport.discovery`) for
``--wait`` seconds, then prints one line per room and host address: the room id, the URL that
joins that host directly, and this machine's interface it answered on (``matchlock join
lan://ROOM_ID`` finds the same host by itself). With ``--json``, one JSON object per line
instead: ``{"type": "room", "room_id", "address", "port", "url", "interface"}``, for a
launcher's "join a game on this network" screen. Where it asked, and what could not be sent,
goes to stderr when no room answered (and always with ``-v``).

Exit code 0, with or without rooms found; 2 for bad usage. It only asks and listens: it never
joins a room or opens a connection to a host.
"""

from __future__ import annotations

import argparse
import json
import sys

from matchlock.cli.loop import run as run_loop
from matchlock.transport.discovery import Announcement, Survey, list_lan_rooms

__all__ = ["register", "run"]


def _seconds(text: str) -> float:
    """A positive number of seconds; an argparse type."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds from 0 to 3600")
    return value


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``lan`` sub-command and its ``list`` verb."""
    parser = commands.add_parser(
        "lan",
        help="list the rooms hosts on this network announce",
        description="The rooms that hosts on the local network announce. Only hosts listening "
        "on lan://ROOM_ID answer (serve and tcp:// hosts do not).",
    )
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    listing = verbs.add_parser(
        "list",
        help="the rooms hosts on this network announce right now",
        description="Ask every network this machine is on which rooms its hosts announce, and "
        "print each room with the address of the host that answered.",
    )
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.add_argument(
        "--wait",
        type=_seconds,
        default=1.0,
        metavar="S",
        help="seconds to wait for answers (default 1)",
    )
    listing.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """List the announced rooms; see the module docs for the output."""
    found = run_loop(list_lan_rooms(args.wait))
    for room in found.rooms:
        print(json.dumps(_as_json(room)) if args.json else _as_text(room), flush=True)
    if not found.rooms or args.verbose:
        _explain(found, args.wait)
    return 0


def _as_json(room: Announcement) -> dict[str, object]:
    return {
        "type": "room",
        "room_id": room.room_id,
        "address": room.address,
        "port": room.port,
        "url": room.url,
        "interface": room.interface,
    }


def _as_text(room: Announcement) -> str:
    on = f"  (on {room.interface})" if room.interface else ""
    return f"{room.room_id}  {room.url}{on}"


def _explain(found: Survey, wait: float) -> None:
    """Where the query went, on stderr."""
    said = f"{len(found.rooms)} room(s)" if found.rooms else "no room"
    print(f"matchlock: {said} announced within {wait:g} s; asked:", file=sys.stderr)
    for asked in found.asked:
        print(f"  - {asked}", file=sys.stderr)
