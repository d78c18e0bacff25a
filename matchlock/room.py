"""A room's state and the fold that builds it from events: ``state = replay(events)``.

:class:`Room` is the aggregate: it applies one event at a time through the machines of
:mod:`matchlock.machines`, checking every guard *before* changing anything, so an illegal event
raises :class:`~matchlock.errors.IllegalEventError` and leaves the room exactly as it was. The
live room (the host, a client, a download job) and a replay of its log run this same code, which
is why they always agree.

Internally a room is plain slotted objects holding state strings (fast to build and to fold);
:meth:`Room.snapshot` turns it into the frozen, JSON-serialisable :class:`RoomState`.

Pure core: no IO, no clock, no randomness.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict

from matchlock import events as ev
from matchlock.config import RoomConfig
from matchlock.errors import IllegalEventError
from matchlock.machines import MEMBER, PIECE, ROOM
from matchlock.signing import verify_room

__all__ = ["MemberState", "PieceState", "Refusal", "Room", "RoomState", "replay"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class PieceState(_Frozen):
    """One member's piece: machine state, bytes so far of ``size``, where it came from, and why
    each resolvable tried so far failed."""

    status: str
    done: int
    size: int
    source: str = ""
    failures: tuple[ev.ResolvableFailure, ...] = ()


class MemberState(_Frozen):
    """One member: machine state and every expected piece's state by ``collection/piece``."""

    status: str
    pieces: dict[str, PieceState]


class Refusal(_Frozen):
    """Someone refused entry or a message refused: who they claimed to be, a code, the reason."""

    at: float
    user_id: str
    code: str
    reason: str


class RoomState(_Frozen):
    """A room (or download job) at one point of its log."""

    kind: Literal["room", "download", "empty"]
    room_id: str
    status: str
    members: dict[str, MemberState]
    refusals: tuple[Refusal, ...]
    events: int


class _Piece:
    __slots__ = ("done", "failures", "size", "source", "status")

    def __init__(self, size: int) -> None:
        self.status = PIECE.initial
        self.done = 0
        self.size = size
        self.source = ""
        self.failures: list[ev.ResolvableFailure] = []


class _Member:
    __slots__ = ("pieces", "status")

    def __init__(self, sizes: dict[str, int]) -> None:
        self.status = MEMBER.initial
        self.pieces = {key: _Piece(size) for key, size in sizes.items()}


class Room:
    """The mutable aggregate behind a room's state. Feed it events with :meth:`apply`."""

    def __init__(self) -> None:
        self.kind: Literal["room", "download", "empty"] = "empty"
        self.config: RoomConfig | None = None
        self.room_id = ""
        self.status = ""
        self.members: dict[str, _Member] = {}
        self.refusals: list[Refusal] = []
        self.events = 0

    def apply(self, event: ev.Event) -> None:
        """Apply one event, or raise :class:`IllegalEventError` and change nothing."""
        _HANDLERS[type(event)](self, event)
        self.events += 1

    def snapshot(self) -> RoomState:
        """The current state as a frozen :class:`RoomState`."""
        return RoomState(
            kind=self.kind,
            room_id=self.room_id,
            status=self.status,
            members={
                user: MemberState(
                    status=member.status,
                    pieces={
                        key: PieceState.model_construct(
                            status=p.status,
                            done=p.done,
                            size=p.size,
                            source=p.source,
                            failures=tuple(p.failures),
                        )
                        for key, p in member.pieces.items()
                    },
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

    def _piece(self, event: _PieceEvent, trigger: str) -> tuple[_Piece, str]:
        member = self._member(event.user_id, trigger)
        _live(self, trigger)
        subject = f"{event.user_id} {event.piece}"
        piece = member.pieces.get(event.piece)
        if piece is None:
            raise IllegalEventError(
                "piece", subject, "unknown", trigger, "not a piece of this room"
            )
        if member.status != "connected":
            raise IllegalEventError(
                "member", event.user_id, member.status, trigger, "not connected"
            )
        return piece, PIECE.next_state(piece.status, trigger, subject)


_PieceEvent = (
    ev.PieceStarted
    | ev.PieceProgress
    | ev.ResolvableFailed
    | ev.FolderRejected
    | ev.PieceFinished
    | ev.PieceFailed
    | ev.PieceRetried
)


def _fresh(room: Room, trigger: str) -> None:
    if room.kind != "empty":
        raise IllegalEventError("room", room.room_id, room.status, trigger, "already opened")


def _room_opened(room: Room, event: ev.RoomOpened) -> None:
    _fresh(room, "open")
    config = event.config
    verify_room(config)
    sizes = {key: config.content[key].size for key in config.piece_keys()}
    room.kind, room.room_id, room.status = "room", config.room_id, ROOM.initial
    room.config = config
    room.members = {user: _Member(sizes) for user in config.users}


def _download_opened(room: Room, event: ev.DownloadOpened) -> None:
    _fresh(room, "open")
    room.kind, room.room_id, room.status = "download", "download", ROOM.initial
    member = _Member(dict(event.sizes))
    member.status = MEMBER.next_state(member.status, "join", event.user_id)
    room.members = {event.user_id: member}


def _live(room: Room, trigger: str) -> None:
    room._opened(trigger)
    if room.status in ("closed", "aborted"):
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
    unfinished = [key for key, p in member.pieces.items() if p.status != "finished"]
    if unfinished:
        why = f"pieces not finished: {', '.join(unfinished[:5])}"
        raise IllegalEventError("member", event.user_id, member.status, "complete", why)
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


def _room_trigger(room: Room, trigger: str, members_must_be: str) -> None:
    _live(room, trigger)
    status = ROOM.next_state(room.status, trigger, room.room_id)
    if room.kind != "room":
        raise IllegalEventError("room", room.room_id, room.status, trigger, "not a room log")
    behind = [user for user, m in room.members.items() if m.status != members_must_be]
    if behind:
        why = f"members not {members_must_be}: {', '.join(behind)}"
        raise IllegalEventError("room", room.room_id, room.status, trigger, why)
    room.status = status


def _room_all_done(room: Room, event: ev.RoomAllDone) -> None:
    _room_trigger(room, "all_done", "done")


def _room_closed(room: Room, event: ev.RoomClosed) -> None:
    _room_trigger(room, "close", "goodbye")


def _room_aborted(room: Room, event: ev.RoomAborted) -> None:
    _live(room, "abort")
    room.status = ROOM.next_state(room.status, "abort", room.room_id)


def _download_closed(room: Room, event: ev.DownloadClosed) -> None:
    _live(room, "end")
    if room.kind != "download":
        raise IllegalEventError("room", room.room_id, room.status, "end", "not a download log")
    room.status = ROOM.next_state(room.status, "end", room.room_id)


_HANDLERS: dict[type, Callable[[Room, ev.Event], None]] = {
    ev.RoomOpened: _room_opened,  # type: ignore[dict-item]
    ev.DownloadOpened: _download_opened,  # type: ignore[dict-item]
    ev.MemberJoined: _member_joined,  # type: ignore[dict-item]
    ev.MemberRefused: _member_refused,  # type: ignore[dict-item]
    ev.MemberDisconnected: _member_disconnected,  # type: ignore[dict-item]
    ev.MemberDone: _member_done,  # type: ignore[dict-item]
    ev.MemberGoodbye: _member_goodbye,  # type: ignore[dict-item]
    ev.PieceStarted: _piece_started,  # type: ignore[dict-item]
    ev.PieceProgress: _piece_progress,  # type: ignore[dict-item]
    ev.ResolvableFailed: _resolvable_failed,  # type: ignore[dict-item]
    ev.FolderRejected: _folder_rejected,  # type: ignore[dict-item]
    ev.PieceFinished: _piece_finished,  # type: ignore[dict-item]
    ev.PieceFailed: _piece_failed,  # type: ignore[dict-item]
    ev.PieceRetried: _piece_retried,  # type: ignore[dict-item]
    ev.RoomAllDone: _room_all_done,  # type: ignore[dict-item]
    ev.RoomClosed: _room_closed,  # type: ignore[dict-item]
    ev.RoomAborted: _room_aborted,  # type: ignore[dict-item]
    ev.DownloadClosed: _download_closed,  # type: ignore[dict-item]
}


def replay(events: Iterable[ev.Event]) -> RoomState:
    """Fold ``events`` into the state they lead to; raises on the first illegal event."""
    room = Room()
    for event in events:
        room.apply(event)
    return room.snapshot()
