"""Events: the only thing that changes a room's state, and the only thing the log stores.

Each event is a frozen pydantic model with a ``type`` tag (the discriminator of the union
:data:`Event`) and a schema version ``v``. Time enters as data: ``at`` is whatever clock the
caller chose (seconds since the epoch, as a float); the core never reads a clock.

One log holds one stream: the authoritative log of a room (host), a client's own log of a room,
or the log of a download job. Rooms start with :class:`RoomOpened`; downloads with
:class:`DownloadOpened`, which declares a single local member and its pieces.

Schema evolution: a new version of an event bumps :data:`EVENT_SCHEMA_VERSION` and registers an
upcaster in :data:`UPCASTERS` that turns a raw event of the older version into the newer shape.
Old logs keep replaying: the log reader upcasts every event whose ``v`` is older than the current.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter

from matchlock.config import MAX_NAME_LENGTH, RoomConfig

__all__ = [
    "EVENT_SCHEMA_VERSION",
    "UPCASTERS",
    "DownloadClosed",
    "DownloadOpened",
    "Event",
    "EventAdapter",
    "FolderRejected",
    "MemberDisconnected",
    "MemberDone",
    "MemberGoodbye",
    "MemberJoined",
    "MemberRefused",
    "PieceFailed",
    "PieceFinished",
    "PieceProgress",
    "PieceRetried",
    "PieceStarted",
    "ResolvableFailed",
    "ResolvableFailure",
    "RoomAborted",
    "RoomAllDone",
    "RoomClosed",
    "RoomOpened",
]

EVENT_SCHEMA_VERSION = 1
"""The version of the event schema this code writes."""

UPCASTERS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}
"""``UPCASTERS[n]`` turns a raw event of version ``n`` into one of version ``n + 1``."""

_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.\-]*"

# Events name users and pieces by the ids of a room config that was validated in full. Here the
# shape is checked (cheaply, by pydantic's own regex engine, on the replay's hot path); that the
# user and the piece belong to the room is checked by the fold, which refuses any other.
SafeName = Annotated[str, StringConstraints(max_length=MAX_NAME_LENGTH, pattern=f"^{_NAME}$")]
PieceAddress = Annotated[
    str, StringConstraints(max_length=2 * MAX_NAME_LENGTH + 1, pattern=f"^{_NAME}/{_NAME}$")
]


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    v: int = EVENT_SCHEMA_VERSION
    at: float = Field(
        description="When it happened, by the caller's clock (seconds since the epoch)."
    )


class RoomOpened(_Event):
    """A room opened from its config, which every expected user signed and which pins every
    expected piece's content (its sizes bound the progress reports)."""

    type: Literal["room_opened"] = "room_opened"
    config: RoomConfig


class DownloadOpened(_Event):
    """A download job started for ``user_id`` (``local`` by default) with these pieces' sizes."""

    type: Literal["download_opened"] = "download_opened"
    user_id: SafeName = "local"
    sizes: dict[PieceAddress, int]


class MemberJoined(_Event):
    """A member proved who they are and is connected."""

    type: Literal["member_joined"] = "member_joined"
    user_id: SafeName


class MemberRefused(_Event):
    """Someone was refused; the room's state is unchanged. ``user_id`` is what they claimed."""

    type: Literal["member_refused"] = "member_refused"
    user_id: str = Field(max_length=256)
    code: str = Field(max_length=64)
    reason: str = Field(max_length=1024)


class MemberDisconnected(_Event):
    """A member's connection ended before goodbye."""

    type: Literal["member_disconnected"] = "member_disconnected"
    user_id: SafeName
    reason: str = ""


class MemberDone(_Event):
    """A member has every piece."""

    type: Literal["member_done"] = "member_done"
    user_id: SafeName


class MemberGoodbye(_Event):
    """A done member said goodbye."""

    type: Literal["member_goodbye"] = "member_goodbye"
    user_id: SafeName


class PieceStarted(_Event):
    """A member started getting a piece (checking, then downloading)."""

    type: Literal["piece_started"] = "piece_started"
    user_id: SafeName
    piece: PieceAddress


class PieceProgress(_Event):
    """Bytes of a piece obtained so far from the current resolvable."""

    type: Literal["piece_progress"] = "piece_progress"
    user_id: SafeName
    piece: PieceAddress
    done: int = Field(ge=0)


class ResolvableFailure(BaseModel):
    """Why one resolvable did not yield the piece."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    index: int = Field(ge=0)
    url: str
    reason: str


class ResolvableFailed(_Event):
    """One resolvable failed; the next one is tried (progress restarts from zero)."""

    type: Literal["resolvable_failed"] = "resolvable_failed"
    user_id: SafeName
    piece: PieceAddress
    failure: ResolvableFailure


class FolderRejected(_Event):
    """A folder that could have held the piece (``where``: the game's files or the cache) does
    not verify, so it is not used; ``reason`` says what differs. The piece is installed afresh."""

    type: Literal["folder_rejected"] = "folder_rejected"
    user_id: SafeName
    piece: PieceAddress
    folder: str = Field(max_length=4096)
    where: Literal["engine", "cache"]
    reason: str = Field(max_length=1024)


class PieceFinished(_Event):
    """A member has a piece, verified. ``source`` is ``cache``, ``engine`` or a resolvable URL."""

    type: Literal["piece_finished"] = "piece_finished"
    user_id: SafeName
    piece: PieceAddress
    source: str = ""


class PieceFailed(_Event):
    """Every resolvable failed: the piece is in error, with each resolvable's reason."""

    type: Literal["piece_failed"] = "piece_failed"
    user_id: SafeName
    piece: PieceAddress
    failures: tuple[ResolvableFailure, ...] = ()


class PieceRetried(_Event):
    """A piece in error goes back to not started, to be tried again."""

    type: Literal["piece_retried"] = "piece_retried"
    user_id: SafeName
    piece: PieceAddress


class RoomAllDone(_Event):
    """Every member has every piece."""

    type: Literal["room_all_done"] = "room_all_done"


class RoomClosed(_Event):
    """Every member said goodbye; the room is closed."""

    type: Literal["room_closed"] = "room_closed"


class RoomAborted(_Event):
    """The room ended without completing (deadline, host decision)."""

    type: Literal["room_aborted"] = "room_aborted"
    reason: str


class DownloadClosed(_Event):
    """A download job ended (whatever each piece's outcome)."""

    type: Literal["download_closed"] = "download_closed"


Event = Annotated[
    RoomOpened
    | DownloadOpened
    | MemberJoined
    | MemberRefused
    | MemberDisconnected
    | MemberDone
    | MemberGoodbye
    | PieceStarted
    | PieceProgress
    | ResolvableFailed
    | FolderRejected
    | PieceFinished
    | PieceFailed
    | PieceRetried
    | RoomAllDone
    | RoomClosed
    | RoomAborted
    | DownloadClosed,
    Field(discriminator="type"),
]
"""Any event, discriminated by its ``type``."""

EventAdapter: TypeAdapter[Event] = TypeAdapter(Event)
"""Validates and serialises :data:`Event` (``EventAdapter.validate_json(...)``)."""
