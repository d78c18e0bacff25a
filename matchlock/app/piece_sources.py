"""Where each of a joining member's pieces is coming from right now, and who in the room holds
it: the ``from`` and ``holders`` columns of ``matchlock join``'s live table.

:class:`LiveSources` follows the member's own piece events. Before a piece finishes, it is
coming from the next source not yet failed, in the order the download tries them (the
resolvables the room allows, in the config's order, and the room at ``room_source``: first,
last or never; a holder failing, ``room:bob``, leaves the room a source, as the next holder is
asked; ``room:`` failing means no holder was found), or, once each failed, the one that failed
last, tried again; once finished, from where ``piece_finished.source`` says (``engine``,
``cache``, a URL, ``room:<holder>``). Holders are the other members present in the room whose
piece its state says is finished: those the host may ask to serve it (whether each serves,
said in its hello, is not in the events, so a member that joined with ``--no-serve`` is listed
too).

It reads events and configs only: no files, no network.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from matchlock.core import events as ev
from matchlock.core.config import MatchLockConfig, RoomConfig, RoomSource
from matchlock.core.room import RoomState

__all__ = ["ROOM_URL", "LiveSources", "PieceSource"]

ROOM_URL = "room:"
"""The source that stands for the room's members (``room:<holder>`` once one gave it)."""


@dataclass
class PieceSource:
    """One piece of this member: its sources in order, those failed so far, how it ended."""

    order: tuple[str, ...]
    failed: list[str] = field(default_factory=list)
    finished: str | None = None
    gave_up: bool = False

    def describe(self) -> str:
        """Where the piece is coming from (or came from), in a few words."""
        if self.finished is not None:
            return _source_words(self.finished)
        if self.gave_up or not self.order:
            return "nowhere: every source failed"
        left = [source for source in self.order if source not in self.failed]
        if left:
            return _source_words(left[0])
        # Every source failed once and the piece goes on: one that failed for a passing
        # reason is being tried again.
        return f"again: {_source_words(self.failed[-1])}"


def _source_words(source: str) -> str:
    if source in ("engine", "cache"):
        return f"here ({source} folder)"
    if source == ROOM_URL:
        return "the room"
    if source.startswith(ROOM_URL):
        return f"the room: {source.removeprefix(ROOM_URL)}"
    return source


class LiveSources:
    """The sources of ``user_id``'s pieces in ``room`` (see the module docs)."""

    def __init__(
        self,
        room: RoomConfig,
        config: MatchLockConfig,
        user_id: str,
        room_source: RoomSource,
    ) -> None:
        self.user_id = user_id
        self.pieces: dict[str, PieceSource] = {}
        allowed = room.restrictions.allowed_schemes
        for key in room.piece_keys():
            piece = config.piece(key)
            urls = [r.url for r in piece.resolvables if r.scheme in allowed] if piece else []
            order = {"first": [ROOM_URL, *urls], "last": [*urls, ROOM_URL], "never": urls}
            self.pieces[key] = PieceSource(tuple(order[room_source]))

    def apply(self, event: ev.Event) -> None:
        """Follow one event (another member's, or any other kind, changes nothing)."""
        if getattr(event, "user_id", None) != self.user_id:
            return
        piece = self.pieces.get(getattr(event, "piece", ""))
        if piece is None:
            return
        match event:
            case ev.PieceStarted():
                piece.finished, piece.gave_up = None, False
                piece.failed.clear()
            case ev.ResolvableFailed(failure=failure):
                # A holder failing (room:bob) leaves the room as a source: the next holder is
                # asked. The room itself (room:) failing means no holder could be found.
                holder = failure.url.startswith(ROOM_URL) and failure.url != ROOM_URL
                if not holder and failure.url not in piece.failed:
                    piece.failed.append(failure.url)
            case ev.PieceFinished(source=source):
                piece.finished = source
            case ev.PieceFailed():
                piece.gave_up = True

    def holders(self, state: RoomState, key: str) -> list[str]:
        """The other members present (connected or done) whose ``key`` the room's state says
        is finished, by user id."""
        return sorted(
            user
            for user, member in state.members.items()
            if user != self.user_id
            and member.status in _PRESENT
            and (held := member.pieces.get(key)) is not None
            and held.status == "finished"
        )


_PRESENT = ("connected", "done")
