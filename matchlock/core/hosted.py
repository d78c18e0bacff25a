"""What the room host keeps of each room, and what it hands its shell: the sans-IO half of
:mod:`matchlock.core.host` that holds data rather than decisions.

A :class:`HostedRoom` is one room on a host: its state (the fold,
:class:`~matchlock.core.room.Room`), its history (the events a welcome resends), which connection
each present member is on, and each member's :class:`Share` of the history, bounded by
:data:`MAX_HISTORY_BYTES` and :data:`MAX_HISTORY_EVENTS`. :meth:`HostedRoom.record` is the only way
an event enters a room: encoded first, then applied (an illegal event raises and nothing is
recorded), then appended and relayed. A :class:`HostOutput` lists what the shell must do with the
result.

Pure core: no sockets, no clock, no randomness, no files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from matchlock.core import events as ev
from matchlock.core import protocol as pr
from matchlock.core.machines import RoomStatus
from matchlock.core.room import Room

__all__ = [
    "MAX_HISTORY_BYTES",
    "MAX_HISTORY_EVENTS",
    "ConnId",
    "Diagnostic",
    "HostOutput",
    "HostedRoom",
    "Recorded",
    "Share",
]

ConnId = int
"""The shell's name for one connection."""

MAX_HISTORY_BYTES = 32 << 20
"""Encoded bytes of a room's history, shared equally by its users: a report that would take a
member past its share is refused ``history-full`` (progress already past nine tenths of it, so
that a member always has room left for its decisions). Keeps a welcome far below a member's
64 MiB frame limit."""

MAX_HISTORY_EVENTS = 1 << 18
"""Events of a room's history, shared equally by its users as :data:`MAX_HISTORY_BYTES` is."""


class Recorded(NamedTuple):
    """An event to record in room ``room_id``'s log, with its JSON (the bytes it was relayed
    with: the log line embeds the same bytes)."""

    room_id: str
    event: ev.Event
    body: bytes


class Diagnostic(NamedTuple):
    """A refusal the host's own diagnostics should count: of a peer that had not proved who it
    is, or of a member past :data:`~matchlock.core.host.MAX_RECORDED_REFUSALS`. ``user_id`` is what
    it claimed."""

    room_id: str
    user_id: str
    code: str
    reason: str


@dataclass
class HostOutput:
    """What the shell must do, in this order: record ``events`` (:class:`Recorded`), send
    ``sends`` (connection, bytes), close ``closes``; and count ``diagnostics``."""

    events: list[Recorded] = field(default_factory=list)
    sends: list[tuple[ConnId, bytes]] = field(default_factory=list)
    closes: list[ConnId] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)



@dataclass
class Share:
    """What one member has added to its room's history."""

    events: int = 0
    bytes: int = 0
    refusals: int = 0


class HostedRoom:
    """One room: its state, its history (for welcomes), who is connected, what each added."""

    def __init__(self) -> None:
        self.room = Room()
        self.history: list[ev.Event] = []
        self.members: dict[str, ConnId] = {}
        self.shares: dict[str, Share] = {}
        self.told: set[str] = set()
        """Members sent the room's end (its last event), live or in a read-only welcome."""

    def record(
        self,
        event: ev.Event,
        out: HostOutput,
        skip: ConnId | None = None,
        body: bytes | None = None,
    ) -> None:
        """Encode ``event`` (unless ``body`` is its encoding already), apply it (raises if
        illegal: then nothing is recorded), record it and relay it to every member (but
        ``skip``, which only a planted bug passes)."""
        if body is None:
            body = ev.EventAdapter.dump_json(event)
        self.room.apply(event)
        self.history.append(event)
        user = getattr(event, "user_id", None)
        if user is not None:
            share = self.shares.setdefault(user, Share())
            share.events += 1
            share.bytes += len(body)
        out.events.append(Recorded(self.room.room_id, event, body))
        frame = pr.relay_frame(len(self.history), body)
        out.sends.extend((conn, frame) for conn in self.members.values() if conn != skip)

    @property
    def ended(self) -> bool:
        """The room has closed or aborted: its history is complete."""
        return self.room.status in (RoomStatus.CLOSED, RoomStatus.ABORTED)

    def over_share(self, user: str, event: pr.ReportEvent, size: int) -> bool:
        """Whether recording ``event`` (``size`` bytes encoded) would take ``user`` past its
        share of the history."""
        users = max(len(self.room.members), 1)
        share = self.shares.get(user, Share())
        fraction = 0.9 if event.type == "piece_progress" else 1.0
        return (
            share.bytes + size > MAX_HISTORY_BYTES // users * fraction
            or share.events + 1 > MAX_HISTORY_EVENTS // users * fraction
        )
