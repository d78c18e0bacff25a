"""What the timeline picture needs from a log, gathered one event at a time: :class:`Timeline`.

:meth:`Timeline.add` sorts each event into a mark on the room's lane, on a user's lane or on a
piece's lane, and a piece's status moves (started, finished, failed, retried) into that piece's
:class:`~matchlock.tools.timeline.draw.Track`. :meth:`Timeline.html` then fits the time axis to what
was gathered, chooses the lanes (collapsing them above :data:`DETAIL_LIMIT`) and assembles the
page from :mod:`~matchlock.tools.timeline.draw` and :mod:`~matchlock.tools.timeline.page`.

What it must never do: trust the log's clock (a time beyond :data:`MAX_TIME` is drawn where the
event before it was), nor keep more than one time per millisecond for the axis (a log may hold
millions of events).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from typing import get_args

from matchlock.core import events as ev
from matchlock.core.room import RoomState
from matchlock.tools.render import describe
from matchlock.tools.timeline.draw import (
    Lane,
    Mark,
    Track,
    draw_marks,
    legend,
    piece_lane,
    spans,
    summary_lane,
    svg,
    user_lane,
)
from matchlock.tools.timeline.page import document, header, refusals, table, text
from matchlock.tools.timeline.scale import Scale
from matchlock.tools.timeline.transfers import ARROW_LIMIT, Transfers

__all__ = ["DETAIL_LIMIT", "MAX_TIME", "UNFINISHED_LIMIT", "Timeline"]

DETAIL_LIMIT = 400
"""Above this many piece lanes (users x pieces), each user's pieces collapse into a summary lane."""

UNFINISHED_LIMIT = 100
"""In a collapsed picture, at most this many unfinished pieces keep a lane of their own."""

MAX_TIME = 1e11
"""Times beyond this (the year 5138, in seconds since the epoch) are a damaged clock: an event
with one is drawn where the one before it was."""

# Which symbol marks an event (the kinds are those of matchlock.tools.timeline.draw); events of
# other types are not marked.
_MARK_KIND = {
    "room_opened": "open",
    "download_opened": "open",
    "room_all_done": "alldone",
    "room_closed": "closed",
    "download_closed": "closed",
    "room_aborted": "aborted",
    "member_joined": "join",
    "member_refused": "refused",
    "member_disconnected": "disconnect",
    "member_done": "done",
    "member_goodbye": "goodbye",
    "resolvable_failed": "failed",
    "folder_rejected": "failed",
    "piece_retried": "retried",
}
_PIECE_MOVE = {
    "piece_started": "in_progress",
    "piece_finished": "finished",
    "piece_failed": "error",
    "piece_retried": "not_started",
}
_ROOM_KINDS = frozenset({"open", "alldone", "closed", "aborted"})
_PIECE_EVENTS = frozenset(
    kind.model_fields["type"].default
    for kind in get_args(ev.PieceEvent)
    if kind is not ev.PieceProgress
)


class Timeline:
    """What the picture needs from a log, gathered one event at a time.

    Pass :meth:`add` as ``on_event`` to :func:`~matchlock.store.eventlog.replay_file` (or call it
    with each event a live room folds: it expects events the fold accepted), then call :meth:`html`
    with the state they led to.
    """

    def __init__(self) -> None:
        self.first: float | None = None
        self.times: list[float] = []  # when something happened, thinned to one per millisecond
        self.lo = math.inf
        self.hi = -math.inf
        self.room_marks: list[Mark] = []
        self.user_marks: dict[str, list[Mark]] = {}
        self.tracks: dict[str, dict[str, Track]] = {}
        self.transfers = Transfers()
        self.began: dict[tuple[str, str], list[float]] = {}  # (user, piece) -> its events' times

    def add(self, seq: int, event: ev.Event) -> None:
        """Take one event (``seq`` is its sequence number in the log)."""
        at = self._clock(event.at)
        if isinstance(event, ev.RoomOpened):
            self._expect(event.config.users, event.config.piece_keys())
        elif isinstance(event, ev.DownloadOpened):
            self._expect([event.user_id], event.sizes)
            self.user_marks[event.user_id].append(Mark(at, "join", f"#{seq} {describe(event)}"))
        user: str | None = getattr(event, "user_id", None)
        piece: str | None = getattr(event, "piece", None)
        track = self._track(user, piece) if user is not None and piece is not None else None
        if track is not None and event.type in _PIECE_MOVE:
            track.moves.append((at, _PIECE_MOVE[event.type]))
        if user is not None and piece is not None:
            self._transfer(f"#{seq}", event, at, user, piece)
        kind = _MARK_KIND.get(event.type)
        if kind is None:
            return
        mark = Mark(at, kind, f"#{seq} {describe(event)}")
        if kind in _ROOM_KINDS:
            self.room_marks.append(mark)
        elif track is not None:
            track.marks.append(mark)
        elif user is not None and user in self.user_marks:
            self.user_marks[user].append(mark)
        else:
            self.room_marks.append(mark)

    def _transfer(self, label: str, event: ev.Event, at: float, user: str, piece: str) -> None:
        """A transfer begins after the receiver's previous event about the piece."""
        receiver = getattr(event, "requester", user)  # a holder's transfer_served names it
        times = self.began.get((receiver, piece), [])
        before = bisect.bisect_left(times, at)
        self.transfers.add(label, event, at, times[before - 1] if before else at)
        if event.type in _PIECE_EVENTS:
            bisect.insort(self.began.setdefault((user, piece), []), at)

    def add_member_log(self, name: str, seq: int, event: ev.Event) -> None:
        """Take one event of a member's own log ``name`` (pass it with
        :func:`functools.partial` as that log's ``on_event``): only what it tells of transfers
        (``transfer_received``, ``transfer_served``) is drawn; the room's log gives the rest."""
        if isinstance(event, ev.MEMBER_LOCAL) and abs(event.at) < MAX_TIME:
            self.lo, self.hi = min(self.lo, event.at), max(self.hi, event.at)
            self._transfer(f"{name} #{seq}", event, event.at, event.user_id, event.piece)

    def _clock(self, at: float) -> float:
        if not abs(at) < MAX_TIME:  # a damaged clock: draw the event where the last one was
            return self.hi if math.isfinite(self.hi) else 0.0
        if self.first is None:
            self.first = at
        self.lo, self.hi = min(self.lo, at), max(self.hi, at)
        if not self.times or abs(at - self.times[-1]) > 1e-3:
            self.times.append(at)
        return at

    def _expect(self, users: Iterable[str], pieces: Iterable[str]) -> None:
        keys = list(pieces)
        for user in users:
            self.user_marks.setdefault(user, [])
            self.tracks[user] = {key: Track() for key in keys}

    def _track(self, user: str, piece: str) -> Track:
        self.user_marks.setdefault(user, [])
        return self.tracks.setdefault(user, {}).setdefault(piece, Track())

    def html(self, state: RoomState, source: str = "", notes: Sequence[str] = ()) -> str:
        """The whole page for ``state`` (what the events added led to). ``source`` names the log
        in the header; ``notes`` are shown under it (plain text, escaped here)."""
        notes = list(notes)
        body = [header(state, self.first, self.hi, source)]
        if self.first is None:
            body.append('<p class="empty">This log holds no events: there is nothing to draw.</p>')
        else:
            busy = [
                (start, stop)
                for tracks in self.tracks.values()
                for track in tracks.values()
                for start, stop, _ in spans(track.moves, self.hi)
            ]
            scale = Scale.fit(self.first, [self.lo, *self.times, self.hi], busy)
            lanes, collapsed = self._lanes(state, scale)
            notes.extend(collapsed)
            found = self.transfers.found
            if len(found) > ARROW_LIMIT:
                notes.append(
                    f"{len(found):,} transfers between room members: the first {ARROW_LIMIT} "
                    "are drawn as arrows."
                )
            body += [legend(), svg(lanes, scale, found)]
            body += [table(state), refusals(state, self.first)]
        body.insert(1, "".join(f'<p class="note">{text(note)}</p>' for note in notes))
        return document(f"matchlock {state.kind} {state.room_id}", "".join(body))

    def _lanes(self, state: RoomState, scale: Scale) -> tuple[list[Lane], list[str]]:
        count = sum(len(tracks) for tracks in self.tracks.values())
        collapse = count > DETAIL_LIMIT
        label = f"room {state.room_id}" if state.kind == "room" else state.kind
        tip = f"{label}: {state.status}"
        lanes = [Lane("", label, "room", tip, draw_marks(self.room_marks, scale, "room"))]
        budget, left_out = (UNFINISHED_LIMIT if collapse else count), 0
        for user, tracks in self.tracks.items():
            member = state.members.get(user)
            status = member.status if member else "unknown"
            lanes.append(user_lane(user, status, self.user_marks[user], scale))
            if collapse:
                lanes.append(summary_lane(user, tracks, scale))
            for key, track in tracks.items():
                piece = member.pieces.get(key) if member else None
                if collapse and piece is not None and piece.status == "finished":
                    continue
                if budget == 0:
                    left_out += 1
                    continue
                budget -= 1
                lanes.append(piece_lane(user, key, track, scale))
        notes = []
        if collapse:
            notes.append(
                f"{count:,} piece lanes are more than {DETAIL_LIMIT}: each user's pieces are drawn "
                "as one summary lane (the share finished, in error and in progress over time), and "
                "only pieces that did not finish keep a lane of their own."
            )
        if left_out:
            notes.append(
                f"{left_out:,} unfinished piece lanes beyond the first {UNFINISHED_LIMIT} "
                "are left out of the picture (the table below lists them)."
            )
        return lanes, notes
