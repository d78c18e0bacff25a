"""What the room host keeps of each room, and what it hands its shell: the sans-IO half of
:mod:`matchlock.core.host` that holds data rather than decisions.

A :class:`HostedRoom` is one room on a host: its state (the fold,
:class:`~matchlock.core.room.Room`), its :class:`History` (the events a welcome resends: all of
them, or only the last ones when the host bounds what it holds, the rest being in the room's log),
which connection each present member is on, and each member's :class:`Share` of the history,
bounded by :data:`MAX_HISTORY_BYTES` and :data:`MAX_HISTORY_EVENTS`. :meth:`HostedRoom.record` is
the only way an event enters a room: encoded first, then applied (an illegal event raises and
nothing is recorded), then appended and relayed. A :class:`HostOutput` lists what the shell must
do with the result, including the :class:`Backfill` reads from the log that a welcome reaching
further back than the held events needs.

Pure core: no sockets, no clock, no randomness, no files.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import NamedTuple, TypeVar, overload

from pydantic import BaseModel

from matchlock.core import events as ev
from matchlock.core import protocol as pr
from matchlock.core.machines import RoomStatus
from matchlock.core.room import Room

__all__ = [
    "HELD_EVENTS",
    "MAX_HISTORY_BYTES",
    "MAX_HISTORY_EVENTS",
    "Backfill",
    "ConnId",
    "Decoded",
    "Diagnostic",
    "History",
    "HostOutput",
    "HostedRoom",
    "Recorded",
    "Share",
    "event_json",
    "restamped",
    "welcome_frame",
]

ConnId = int
"""The shell's name for one connection."""

Decoded = pr.ClientMessage | ev.PieceProgress
"""What the host makes of a frame: a message, or the event of a progress report
(:func:`matchlock.core.reports.stamped_progress`)."""

MAX_HISTORY_BYTES = 32 << 20
"""Encoded bytes of a room's history, shared equally by its users: a report that would take a
member past its share is refused ``history-full`` (progress already past nine tenths of it, so
that a member always has room left for its decisions). Keeps a welcome far below a member's
64 MiB frame limit."""

MAX_HISTORY_EVENTS = 1 << 18
"""Events of a room's history, shared equally by its users as :data:`MAX_HISTORY_BYTES` is."""


HELD_EVENTS = 16
"""Events of each room a room host holds in memory when it bounds them (``matchlock serve`` does:
:class:`~matchlock.app.hosting.RoomHost`): a welcome from further back is read from the room's
log (:class:`Backfill`), so a room's memory is its state and this tail (16 to 31 events), not its
whole history. Few, because every event held is three objects the garbage collector walks: at
64, a flooded host of 250 rooms spent a tenth of its time collecting."""


def event_json(event: ev.Event) -> bytes:
    """``EventAdapter.dump_json(event)``, the same bytes, made by the event's own class (no
    union to choose from: about twice as fast, and the host encodes every event it records)."""
    return event.__pydantic_serializer__.to_json(event)


_Stamped = TypeVar("_Stamped", bound=BaseModel)


def restamped(event: _Stamped, at: float) -> _Stamped:
    """``event.model_copy(update={"at": at})``, equal to it, in half the time (the host stamps
    every report with its own time)."""
    copied = event.__copy__()
    copied.__dict__["at"] = at
    copied.__pydantic_fields_set__.add("at")
    return copied


def welcome_frame(empty: bytes, bodies: Sequence[bytes]) -> bytes:
    """The frame of a welcome whose events are the JSON ``bodies``, from ``empty``, the same
    welcome encoded without events (``pr.welcome_head``): as ``pr.encode`` makes it with the events,
    without encoding them again (every welcome resends the room's opening, its whole config)."""
    return empty.replace(b'"events":[]', b'"events":[%s]' % b",".join(bodies), 1)


class Recorded(NamedTuple):
    """An event to record in room ``room_id``'s log, with its JSON (the bytes it was relayed
    with: the log line embeds the same bytes)."""

    room_id: str
    event: ev.Event
    body: bytes


_recorded = tuple.__new__  # Recorded(...) without its Python-level __new__: one per event


class Diagnostic(NamedTuple):
    """A refusal the host's own diagnostics should count: of a peer that had not proved who it
    is, or of a member past :data:`~matchlock.core.host.MAX_RECORDED_REFUSALS`. ``user_id`` is what
    it claimed."""

    room_id: str
    user_id: str
    code: str
    reason: str


class Backfill(NamedTuple):
    """The welcome of ``conn`` needs events ``since + 1`` to ``upto`` of room ``room_id``, which
    the host no longer holds: once the room's log holds them (after the events recorded with
    this output are written), read them from it and hand them to
    :meth:`~matchlock.core.host.HostProtocol.backfilled`."""

    conn: ConnId
    room_id: str
    since: int
    upto: int


@dataclass
class HostOutput:
    """What the shell must do, in this order: record ``events`` (:class:`Recorded`), send
    ``sends`` (connection, bytes), close ``closes``; count ``diagnostics``; and serve each
    ``backfills`` read (:class:`Backfill`), which never holds up the rest."""

    events: list[Recorded] = field(default_factory=list)
    sends: list[tuple[ConnId, bytes]] = field(default_factory=list)
    closes: list[ConnId] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    backfills: list[Backfill] = field(default_factory=list)
    transfer_only: bool = False
    """Every frame of ``sends`` belongs to a peer transfer and nothing else is to be done: no
    event to record, nothing to close. The shell may send such frames at once, ahead of outputs
    still waiting on the log, since they tell of no room event (their own order is kept)."""

    def sends_only(self) -> bool:
        """True when this output only sends frames (a transfer's): nothing recorded, closed
        or read."""
        return not (self.events or self.closes or self.backfills)



@dataclass
class Share:
    """What one member has added to its room's history."""

    events: int = 0
    bytes: int = 0
    refusals: int = 0


_NO_SHARE = Share()  # of a member that has added nothing yet: never changed


class History(Sequence[ev.Event]):
    """A room's events by position (index 0 is event 1), of which only the last ``held`` are
    kept in memory (all of them when ``held`` is None). ``len`` is the number of events the
    room has; :attr:`start` is how many of the first are no longer held: indexing one of those,
    or iterating while there are any, raises :class:`LookupError` (read them from the log)."""

    def __init__(self, held: int | None = None) -> None:
        self.held = held
        self.start = 0
        self._events: list[ev.Event] = []
        self._bodies: list[bytes] = []

    def append(self, event: ev.Event, body: bytes) -> int:
        """Add the room's next event and its JSON, letting go of the oldest held beyond
        ``held``; the room's events now (``len``)."""
        events = self._events
        events.append(event)
        self._bodies.append(body)
        held = len(events)
        if self.held is not None and held >= 2 * self.held:  # let go in blocks: O(1)
            drop = held - self.held
            del events[:drop], self._bodies[:drop]
            self.start += drop
        return self.start + len(events)

    def bodies(self, since: int) -> list[bytes]:
        """The JSON of every event after the first ``since`` (``EventAdapter.dump_json``)."""
        if since < self.start:
            raise LookupError(self._gone(since))
        return self._bodies[since - self.start :]

    def __len__(self) -> int:
        return self.start + len(self._events)

    @overload
    def __getitem__(self, index: int) -> ev.Event: ...

    @overload
    def __getitem__(self, index: slice) -> list[ev.Event]: ...

    def __getitem__(self, index: int | slice) -> ev.Event | list[ev.Event]:
        if isinstance(index, slice):
            first, stop, step = index.indices(len(self))
            if step != 1 or (first < self.start and stop > first):
                raise LookupError(self._gone(first))
            return self._events[max(first - self.start, 0) : max(stop - self.start, 0)]
        position = index + len(self) if index < 0 else index
        if not self.start <= position < len(self):
            if 0 <= position < self.start:
                raise LookupError(self._gone(position))
            raise IndexError("no such event")
        return self._events[position - self.start]

    def __iter__(self) -> Iterator[ev.Event]:
        if self.start:
            raise LookupError(self._gone(0))
        return iter(self._events)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, History | list | tuple):
            return len(self) == len(other) and list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, as a list is

    def _gone(self, position: int) -> str:
        return (
            f"event {position + 1} is no longer held in memory (only events after "
            f"{self.start} are): read it from the room's log"
        )


class HostedRoom:
    """One room: its state, its history (for welcomes; only the last ``held`` events in memory
    when ``held`` is given), who is connected, what each added."""

    def __init__(self, held: int | None = None) -> None:
        self.room = Room()
        self.history = History(held)
        self.members: dict[str, ConnId] = {}
        self.welcoming: dict[str, ConnId] = {}
        """Members whose welcome waits for a :class:`Backfill` (not yet relayed anything)."""
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
            body = event_json(event)
        room = self.room
        room.apply(event)
        seq = self.history.append(event, body)
        user = getattr(event, "user_id", None)
        if user is not None:
            share = self.shares.get(user)
            if share is None:
                share = self.shares[user] = Share()
            share.events += 1
            share.bytes += len(body)
        out.events.append(_recorded(Recorded, (room.room_id, event, body)))
        frame = pr.relay_frame(seq, body)
        if skip is None:
            out.sends += zip(self.members.values(), repeat(frame))
        else:
            out.sends += [(conn, frame) for conn in self.members.values() if conn != skip]

    @property
    def ended(self) -> bool:
        """The room has closed or aborted: its history is complete."""
        return self.room.status in (RoomStatus.CLOSED, RoomStatus.ABORTED)

    def over_share(self, user: str, event: pr.ReportEvent, size: int) -> bool:
        """Whether recording ``event`` (``size`` bytes encoded) would take ``user`` past its
        share of the history."""
        users = max(len(self.room.members), 1)
        share = self.shares.get(user) or _NO_SHARE
        fraction = 0.9 if event.type == "piece_progress" else 1.0
        return (
            share.bytes + size > MAX_HISTORY_BYTES // users * fraction
            or share.events + 1 > MAX_HISTORY_EVENTS // users * fraction
        )
