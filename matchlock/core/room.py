"""A room's state and the fold that builds it from events: ``state = replay(events)``.

:class:`Room` is the aggregate: it applies one event at a time through the machines of
:mod:`matchlock.core.machines`, checking every guard *before* changing anything, so an illegal event
raises :class:`~matchlock.core.errors.IllegalEventError` and leaves the room exactly as it was. The
live room (the host, a client, a download job) and a replay of its log run this same code, which
is why they always agree.

Internally a room is plain slotted objects holding state strings (fast to build and to fold);
:meth:`Room.snapshot` turns it into the frozen, JSON-serialisable :class:`RoomState`
(:mod:`matchlock.core.roomstate`, whose names this module exports too).

Pure core: no IO, no clock, no randomness.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, assert_never

from matchlock.core import events as ev
from matchlock.core.config import RoomConfig
from matchlock.core.errors import IllegalEventError
from matchlock.core.machines import (
    MEMBER,
    PIECE,
    ROOM,
    STATE_TRIGGERED,
    MemberStatus,
    PieceStatus,
    RoomStatus,
    StateTriggered,
)
from matchlock.core.roomstate import MemberState, PieceState, Refusal, RoomState
from matchlock.core.signing import verify_room

__all__ = ["MemberState", "PieceState", "Refusal", "Room", "RoomState", "next_due", "replay"]


class _Piece:
    __slots__ = ("done", "failures", "size", "source", "status")

    def __init__(self, size: int) -> None:
        self.status: PieceStatus = PIECE.initial
        self.done = 0
        self.size = size
        self.source = ""
        self.failures: list[ev.ResolvableFailure] = []

    def state(self) -> PieceState:
        """This piece as a frozen :class:`PieceState`, built as ``PieceState.model_construct``
        builds it from every field, in a third of its time (a member projects its pieces
        with these at every welcome and report; a snapshot makes one per piece)."""
        state = _new_state(PieceState)
        fields = {"status": self.status, "done": self.done, "size": self.size}
        fields["source"], fields["failures"] = self.source, tuple(self.failures)
        _set(state, "__dict__", fields)
        _set(state, "__pydantic_fields_set__", set(_PIECE_FIELDS))
        _set(state, "__pydantic_extra__", None)
        _set(state, "__pydantic_private__", None)
        return state


_new_state = PieceState.__new__
_set = object.__setattr__
_PIECE_FIELDS = frozenset(PieceState.model_fields)


class _Member:
    __slots__ = ("pieces", "status")

    def __init__(self, sizes: dict[str, int]) -> None:
        self.status: MemberStatus = MEMBER.initial
        self.pieces = {key: _Piece(size) for key, size in sizes.items()}


class Room:
    """The mutable aggregate behind a room's state. Feed it events with :meth:`apply`."""

    def __init__(self) -> None:
        self.kind: Literal["room", "download", "empty"] = "empty"
        self.config: RoomConfig | None = None
        self.room_id = ""
        self.status: RoomStatus | Literal[""] = ""
        self.members: dict[str, _Member] = {}
        self.refusals: list[Refusal] = []
        self.events = 0
        self.lagging: dict[tuple[str, str], str] = {}
        """For each state-triggered rule (and member), a part last found keeping it from
        being due: a hint that speeds :func:`next_due` up, never part of the state."""

    def apply(self, event: ev.Event) -> None:
        """Apply one event, or raise :class:`IllegalEventError` and change nothing. A
        member-local event (:data:`~matchlock.core.events.MEMBER_LOCAL`) changes nothing and is
        not counted: a member's own log folds to the state its host's log folds to."""
        if type(event) is ev.PieceProgress:  # most events of a log: straight to their case
            _piece_progress(self, event)
        else:
            _fold(self, event)
            if isinstance(event, ev.MEMBER_LOCAL):
                return
        self.events += 1

    def piece_state(self, user_id: str, piece: str) -> PieceState:
        """One member's piece as a frozen :class:`PieceState` (KeyError if not in the room)."""
        return self.members[user_id].pieces[piece].state()

    def snapshot(self) -> RoomState:
        """The current state as a frozen :class:`RoomState`."""
        return RoomState(
            kind=self.kind,
            room_id=self.room_id,
            status=self.status,
            members={
                user: MemberState(
                    status=member.status,
                    pieces={key: p.state() for key, p in member.pieces.items()},
                )
                for user, member in self.members.items()
            },
            refusals=tuple(self.refusals),
            events=self.events,
        )

    # -- lookups that raise instead of changing anything -----------------------------------

    def _opened(self, what: str) -> None:
        if self.kind == "empty":
            raise IllegalEventError(
                "room", "(not opened)", "empty", what, "the log must open first"
            )

    def _member(self, user_id: str, trigger: str) -> _Member:
        self._opened(trigger)
        member = self.members.get(user_id)
        if member is None:
            raise IllegalEventError("member", user_id, "unknown", trigger, "not an expected user")
        return member

    def _piece(self, event: ev.PieceEvent, trigger: str) -> tuple[_Piece, PieceStatus]:
        member = self.members.get(event.user_id)  # a member exists once the room is opened
        piece = None if member is None else member.pieces.get(event.piece)
        if (
            piece is not None
            and member is not None
            and member.status == MemberStatus.CONNECTED
            and self.status not in _ENDED
        ):
            status = PIECE.table.get((piece.status, trigger))
            if status is not None:  # legal: the checks below would all pass
                return piece, status
        return self._checked_piece(event, trigger)

    def _checked_piece(self, event: ev.PieceEvent, trigger: str) -> tuple[_Piece, PieceStatus]:
        """:meth:`_piece` checking each thing in turn, so that the first wrong one is named."""
        member = self._member(event.user_id, trigger)
        _live(self, trigger)
        subject = f"{event.user_id} {event.piece}"
        piece = member.pieces.get(event.piece)
        if piece is None:
            raise IllegalEventError(
                "piece", subject, "unknown", trigger, "not a piece of this room"
            )
        if member.status != MemberStatus.CONNECTED:
            raise IllegalEventError(
                "member", event.user_id, member.status, trigger, "not connected"
            )
        return piece, PIECE.next_state(piece.status, trigger, subject)


def _fresh(room: Room, trigger: str) -> None:
    if room.kind != "empty":
        raise IllegalEventError("room", room.room_id, room.status, trigger, "already opened")


def _room_opened(room: Room, event: ev.RoomOpened) -> None:
    _fresh(room, "open")
    config = event.config
    verify_room(config)
    sizes = {key: config.content[key].content_size for key in config.piece_keys()}
    room.kind, room.room_id, room.status = "room", config.room_id, ROOM.initial
    room.config = config
    room.members = {user: _Member(sizes) for user in config.users}


def _download_opened(room: Room, event: ev.DownloadOpened) -> None:
    _fresh(room, "open")
    room.kind, room.room_id, room.status = "download", "download", ROOM.initial
    member = _Member(dict(event.sizes))
    member.status = MEMBER.next_state(member.status, "join", event.user_id)
    room.members = {event.user_id: member}


_ENDED = (RoomStatus.CLOSED, RoomStatus.ABORTED)


def _live(room: Room, trigger: str) -> None:
    room._opened(trigger)
    if room.status in _ENDED:
        raise IllegalEventError("room", room.room_id, room.status, trigger, "the room has ended")


def _member_joined(room: Room, event: ev.MemberJoined) -> None:
    member = room._member(event.user_id, "join")
    _live(room, "join")
    member.status = MEMBER.next_state(member.status, "join", event.user_id)


def _member_refused(room: Room, event: ev.MemberRefused) -> None:
    room._opened("refuse")
    room.refusals.append(
        Refusal(at=event.at, user_id=event.user_id, code=event.code, reason=event.reason)
    )


def _member_disconnected(room: Room, event: ev.MemberDisconnected) -> None:
    member = room._member(event.user_id, "disconnect")
    member.status = MEMBER.next_state(member.status, "disconnect", event.user_id)


def _member_done(room: Room, event: ev.MemberDone) -> None:
    member = room._member(event.user_id, "complete")
    status = MEMBER.next_state(member.status, "complete", event.user_id)
    _guard(room, _RULES["member_done"], event.user_id, member.status)
    member.status = status


def _member_goodbye(room: Room, event: ev.MemberGoodbye) -> None:
    member = room._member(event.user_id, "goodbye")
    status = MEMBER.next_state(member.status, "goodbye", event.user_id)
    room_status = ROOM.next_state(room.status, "goodbye", room.room_id)
    member.status, room.status = status, room_status


def _piece_started(room: Room, event: ev.PieceStarted) -> None:
    piece, status = room._piece(event, "start")
    piece.status = status


def _piece_progress(room: Room, event: ev.PieceProgress) -> None:
    piece, status = room._piece(event, "progress")
    if not piece.done <= event.done <= piece.size:
        why = f"progress {event.done} outside {piece.done}..{piece.size}"
        raise IllegalEventError("piece", f"{event.user_id} {event.piece}", status, "progress", why)
    piece.status, piece.done = status, event.done


def _resolvable_failed(room: Room, event: ev.ResolvableFailed) -> None:
    piece, status = room._piece(event, "resolvable_failed")
    piece.status, piece.done = status, 0
    piece.failures.append(event.failure)


def _folder_rejected(room: Room, event: ev.FolderRejected) -> None:
    piece, status = room._piece(event, "reject_folder")
    piece.status = status  # recorded for the audit trail; the piece goes on from the next source


def _piece_finished(room: Room, event: ev.PieceFinished) -> None:
    piece, status = room._piece(event, "finish")
    piece.status, piece.done, piece.source = status, piece.size, event.source


def _piece_failed(room: Room, event: ev.PieceFailed) -> None:
    piece, status = room._piece(event, "fail")
    piece.status = status
    if event.failures:
        piece.failures = list(event.failures)


def _piece_retried(room: Room, event: ev.PieceRetried) -> None:
    piece, status = room._piece(event, "retry")
    piece.status, piece.done, piece.source, piece.failures = status, 0, "", []


def _room_trigger(room: Room, rule: StateTriggered) -> None:
    _live(room, rule.trigger)
    if room.kind != "room":
        raise IllegalEventError("room", room.room_id, room.status, rule.trigger, "not a room log")
    status = ROOM.next_state(room.status, rule.trigger, room.room_id)
    _guard(room, rule, "", room.status)
    room.status = status


def _room_aborted(room: Room, event: ev.RoomAborted) -> None:
    _live(room, "abort")
    room.status = ROOM.next_state(room.status, "abort", room.room_id)


def _download_closed(room: Room, event: ev.DownloadClosed) -> None:
    _live(room, "end")
    if room.kind != "download":
        raise IllegalEventError("room", room.room_id, room.status, "end", "not a download log")
    room.status = ROOM.next_state(room.status, "end", room.room_id)


def _fold(room: Room, event: ev.Event) -> None:  # noqa: PLR0912 - one case per event
    """Apply ``event`` to ``room`` by its type; every type of :data:`~matchlock.core.events.Event`
    has its case (``assert_never`` makes a new event without one a type error). The most frequent
    events come first: this is the replay's hot path."""
    match event:
        case ev.PieceProgress():
            _piece_progress(room, event)
        case ev.PieceStarted():
            _piece_started(room, event)
        case ev.PieceFinished():
            _piece_finished(room, event)
        case ev.ResolvableFailed():
            _resolvable_failed(room, event)
        case ev.MemberJoined():
            _member_joined(room, event)
        case ev.MemberDisconnected():
            _member_disconnected(room, event)
        case ev.MemberDone():
            _member_done(room, event)
        case ev.MemberGoodbye():
            _member_goodbye(room, event)
        case ev.MemberRefused():
            _member_refused(room, event)
        case ev.FolderRejected():
            _folder_rejected(room, event)
        case ev.PieceFailed():
            _piece_failed(room, event)
        case ev.PieceRetried():
            _piece_retried(room, event)
        case ev.RoomOpened():
            _room_opened(room, event)
        case ev.DownloadOpened():
            _download_opened(room, event)
        case ev.RoomAllDone():
            _room_trigger(room, _RULES["room_all_done"])
        case ev.RoomClosed():
            _room_trigger(room, _RULES["room_closed"])
        case ev.RoomAborted():
            _room_aborted(room, event)
        case ev.DownloadClosed():
            _download_closed(room, event)
        case ev.TransferReceived() | ev.TransferServed():
            pass  # member-local: what passed between members, never what anyone holds
        case _:
            assert_never(event)


# -- state-triggered transitions (machines.STATE_TRIGGERED): their guards and when they are due --

_RULES = {rule.event: rule for rule in STATE_TRIGGERED}


def _behind(room: Room, rule: StateTriggered, user_id: str) -> list[str]:
    """The parts that keep ``rule`` from being due (empty when it is due)."""
    if rule.parts == "pieces":
        pieces = room.members[user_id].pieces
        return [key for key, piece in pieces.items() if piece.status != rule.all_in]
    return [user for user, member in room.members.items() if member.status != rule.all_in]


def _guard(room: Room, rule: StateTriggered, user_id: str, state: str) -> None:
    """Raise :class:`IllegalEventError` unless ``rule``'s parts are all where it needs them."""
    behind = _behind(room, rule, user_id)
    if behind:
        subject = user_id if rule.machine == "member" else room.room_id
        why = f"{rule.parts} not {rule.all_in}: {', '.join(behind[:5])}"
        raise IllegalEventError(rule.machine, subject, state, rule.trigger, why)


def _all_in(room: Room, rule: StateTriggered, user_id: str) -> bool:
    """Whether ``rule``'s parts are all in ``rule.all_in`` (``_behind`` is empty), looking
    first at the part found behind last time: while a room makes progress it mostly still is,
    so the host's question after each report costs one lookup, not a walk of every part."""
    parts: dict[str, _Piece] | dict[str, _Member]
    if rule.parts == "pieces":
        parts, seen = room.members[user_id].pieces, (rule.event, user_id)
    else:
        parts, seen = room.members, (rule.event, "")
    lagging = parts.get(room.lagging.get(seen, ""))
    if lagging is not None and lagging.status != rule.all_in:
        return False
    for key, part in parts.items():
        if part.status != rule.all_in:
            room.lagging[seen] = key
            return False
    return True


def next_due(room: Room, user_id: str, at: float) -> ev.Event | None:
    """The first state-triggered event now due for ``user_id``'s member or for the room (in
    :data:`~matchlock.core.machines.STATE_TRIGGERED` order), stamped ``at``; None when none is.
    The host records each (then asks again) after every change that could make one due."""
    if room.kind != "room":
        return None  # a download job derives nothing: it ends with download_closed
    for rule in STATE_TRIGGERED:
        if rule.machine == "member":
            member = room.members.get(user_id)
            if member is None or member.status != rule.state:
                continue
        elif room.status != rule.state:
            continue
        if _all_in(room, rule, user_id):
            fields = {"user_id": user_id} if rule.machine == "member" else {}
            return ev.EventAdapter.validate_python({"type": rule.event, "at": at, **fields})
    return None



def replay(events: Iterable[ev.Event]) -> RoomState:
    """Fold ``events`` into the state they lead to; raises on the first illegal event."""
    room = Room()
    for event in events:
        room.apply(event)
    return room.snapshot()
