"""Human-readable views of events and room states: one line per event, and the users x pieces
table. Used by ``matchlock replay`` and the live views; :func:`describe` is plain text so other
front ends (the HTML timeline, a game's own UI) can reuse it.

What it must never do: let a control character from a log or a peer reach a terminal: every
line and cell passes through :func:`~matchlock.core.safe_text.printable` (re-exported here).
"""

from __future__ import annotations

from collections import Counter

from rich.table import Table

from matchlock.core import events as ev
from matchlock.core.room import PieceState, RoomState
from matchlock.core.safe_text import printable

__all__ = ["STATUS_STYLE", "describe", "piece_cell", "printable", "state_table"]

STATUS_STYLE = {
    "not_started": "dim",
    "in_progress": "yellow",
    "finished": "green",
    "error": "bold red",
    "expected": "dim",
    "connected": "cyan",
    "disconnected": "magenta",
    "done": "green",
    "goodbye": "green",
}
"""The rich style of each piece and member status."""

TABLE_LIMIT = 40
"""Above this many pieces, the table shows per-user counts and only unfinished pieces."""


def describe(event: ev.Event) -> str:
    """One line saying what ``event`` means (its own :meth:`describe`), control characters
    escaped (:func:`printable`)."""
    return printable(event.describe())


def piece_cell(piece: PieceState) -> str:
    """A piece's status as rich markup: its status, and a percentage while in progress."""
    text = piece.status.replace("_", " ")
    if piece.status == "in_progress" and piece.size:
        text += f" {100 * piece.done // piece.size}%"
    return f"[{STATUS_STYLE[piece.status]}]{text}[/]"


def state_table(state: RoomState) -> Table:
    """The users x pieces table (or, for a large room, counts per user and unfinished pieces)."""
    title = printable(f"{state.kind} {state.room_id}: {state.status} after {state.events} events")
    users = list(state.members)
    keys = list(next(iter(state.members.values())).pieces) if users else []
    table = Table(title=title)
    table.add_column("piece")
    for user in users:
        status = state.members[user].status
        table.add_column(f"{printable(user)}\n[{STATUS_STYLE[status]}]{status}[/]")
    if len(keys) > TABLE_LIMIT:
        for status in ("finished", "in_progress", "not_started", "error"):
            counts = [Counter(p.status for p in state.members[u].pieces.values()) for u in users]
            table.add_row(f"({status.replace('_', ' ')})", *[str(c[status]) for c in counts])
        keys = [
            k for k in keys if any(state.members[u].pieces[k].status != "finished" for u in users)
        ]
        keys = keys[:TABLE_LIMIT]
    for key in keys:
        table.add_row(printable(key), *[piece_cell(state.members[u].pieces[key]) for u in users])
    return table
