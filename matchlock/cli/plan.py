"""``matchlock plan ROOM.json --config MATCHLOCK.json``: where each piece will come from.

Before joining, says for each piece of the room whether it is already here (which folder: the
game's or the cache's), which mirror answers first and how many bytes it will send, or whether
only a member of the room can give it; then the totals in bytes (:mod:`matchlock.app.plan`).
It downloads nothing and writes nothing. With ``--json``, one JSON object on stdout:
``{"type": "plan", "room_id", "room_source", "pieces": [{"piece", "source", "bytes", "folder",
"where", "url", "form", "probes": [{"url", "ok", "problem"}], "problem"}], "totals": {"here",
"mirror", "room", "nowhere", "total"}}``.

Exit codes: 0 every piece has somewhere to come from; 1 some piece has nowhere (``nowhere``:
the config cannot install it, or no mirror answered and the room is not a source); 2 bad input.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from matchlock.app.configfile import load_matchlock_config, load_room_config
from matchlock.app.piece_sources import LiveSources
from matchlock.app.plan import PROBE_TIMEOUT, PiecePlan, Plan, plan_room_sync
from matchlock.core.room import RoomState
from matchlock.core.safe_text import printable
from matchlock.downloads.manage import cache_root

__all__ = ["plan_table", "register", "run", "source_text", "sources_table"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``plan`` sub-command."""
    parser = commands.add_parser(
        "plan",
        help="say where each piece of a room will come from, before joining",
        description="For each piece of ROOM.json: already here (which folder), a mirror (the "
        "first that answers a HEAD request, and how many bytes), or only the room; then the "
        "totals in bytes. Downloads nothing.",
    )
    parser.add_argument("room", type=Path, metavar="ROOM.json", help="the room config")
    parser.add_argument(
        "--config",
        type=Path,
        required=True,
        metavar="MATCHLOCK.json",
        help="your match-lock config",
    )
    parser.add_argument(
        "--dest",
        type=Path,
        metavar="DIR",
        help="the cache folder (default: $MATCHLOCK_CACHE or the user cache folder)",
    )
    parser.add_argument("--engine-root", type=Path, metavar="DIR", help="the game's folder")
    parser.add_argument(
        "--room-source",
        choices=("first", "last", "never"),
        help="where room members come among each piece's sources, as join --room-source "
        "(default: the room config's choice, else last)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=PROBE_TIMEOUT,
        metavar="S",
        help=f"seconds each mirror has to answer (default {PROBE_TIMEOUT:g})",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the plan; 1 when some piece has nowhere to come from."""
    room = load_room_config(args.room)
    config = load_matchlock_config(args.config)
    plan = plan_room_sync(
        room,
        config,
        cache_root(args.dest),
        engine_root=args.engine_root,
        room_source=args.room_source,
        timeout=args.timeout,
    )
    if args.json:
        print(json.dumps(plan.as_json()))
    else:
        console = Console(highlight=False)
        console.print(plan_table(plan))
        totals = plan.totals()
        console.print(
            f"{totals['total']:,} bytes: {totals['here']:,} here, {totals['mirror']:,} from "
            f"mirrors, {totals['room']:,} from the room, {totals['nowhere']:,} from nowhere",
            markup=False,
        )
    return 1 if any(piece.source == "nowhere" for piece in plan.pieces) else 0


def source_text(piece: PiecePlan) -> str:
    """Where ``piece`` comes from, in a few words (plain text, control characters escaped)."""
    if piece.source == "here":
        text = f"here: {piece.where} folder {piece.folder}"
    elif piece.source == "mirror":
        text = f"mirror {piece.url}"
    elif piece.source == "room":
        text = f"the room ({piece.form})"
        if piece.url is not None:
            text += f", else mirror {piece.url}"
    else:
        last = piece.probes[-1].problem if piece.probes else None
        text = f"nowhere: {piece.problem or last or 'no resolvable, and the room is no source'}"
    return printable(text)


def plan_table(plan: Plan) -> Table:
    """The plan as a table: piece, where it comes from, its bytes."""
    table = Table(title=printable(f"room {plan.room_id}: where each piece comes from"))
    table.add_column("piece")
    table.add_column("from")
    table.add_column("bytes", justify="right")
    for piece in plan.pieces:
        failed = [f"{p.url}: {p.problem}" for p in piece.probes if p.problem is not None]
        detail = source_text(piece)
        if failed and piece.source != "nowhere":
            detail += "\n" + printable("; ".join(failed))
        table.add_row(printable(piece.piece), detail, f"{piece.bytes:,}")
    return table


def sources_table(sources: LiveSources, state: RoomState) -> Table:
    """While joining: each of this member's pieces, where it is coming from, who holds it."""
    table = Table(title=printable(f"{sources.user_id}: where each piece comes from"))
    table.add_column("piece")
    table.add_column("from")
    table.add_column("held by")
    for key, piece in sources.pieces.items():
        holders = ", ".join(sources.holders(state, key)) or "nobody yet"
        table.add_row(printable(key), printable(piece.describe()), printable(holders))
    return table
