"""Events: the only thing that changes a room's state, and the only thing the log stores.

Each event is a frozen pydantic model with a ``type`` tag (the discriminator of the union
:data:`Event`) and a schema version ``v``. Time enters as data: ``at`` is whatever clock the
caller chose (seconds since the epoch, as a float); the core never reads a clock.

One log holds one stream: the authoritative log of a room (host), a client's own log of a room,
or the log of a download job. Rooms start with :class:`RoomOpened`; downloads with
:class:`DownloadOpened`, which declares a single local member and its pieces.

A member's own log also holds *member-local* events (:data:`MEMBER_LOCAL`): what this member
received from peers and served to them (:class:`TransferReceived`, :class:`TransferServed`).
They are never sent on the wire (a host refuses them in a report, as any event that is not about
a piece), and the room's fold ignores them: they say what happened between members, never what
a member holds.

Schema evolution: a new version of an event bumps :data:`EVENT_SCHEMA_VERSION` and registers an
upcaster in :data:`UPCASTERS` that turns a raw event of the older version into the newer shape.
Old logs keep replaying: the log reader upcasts every event whose ``v`` is older than the current.
Only a log is upcast: the wire (:mod:`matchlock.core.protocol`) refuses any other version.

Every string and list is bounded (the ``MAX_*`` constants below, tabled in docs/protocol.md),
and ``at`` must be finite, so that what a peer reports costs at most
:data:`MAX_REPORT_EVENT_BYTES`. Code that builds an event from text it did not choose (an error
message, a server's header) passes it through :func:`clip` first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter

from matchlock.core.config import MAX_EXACT_INTEGER, MAX_NAME_LENGTH, RoomConfig

__all__ = [
    "DECISIONS",
    "EVENT_SCHEMA_VERSION",
    "EVENT_TYPES",
    "MAX_CLAIMED_ID_LENGTH",
    "MAX_CODE_LENGTH",
    "MAX_FAILURES",
    "MAX_PATH_LENGTH",
    "MAX_REASON_LENGTH",
    "MAX_REPORT_EVENT_BYTES",
    "MAX_URL_LENGTH",
    "MEMBER_LOCAL",
    "UPCASTERS",
    "Count",
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
    "PieceEvent",
    "PieceFailed",
    "PieceFinished",
    "PieceProgress",
    "PieceRetried",
    "PieceStarted",
    "Reason",
    "ResolvableFailed",
    "ResolvableFailure",
    "RoomAborted",
    "RoomAllDone",
    "RoomClosed",
    "RoomOpened",
    "TransferReceived",
    "TransferServed",
    "clip",
]

EVENT_SCHEMA_VERSION = 1
"""The version of the event schema this code writes."""

UPCASTERS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}
"""``UPCASTERS[n]`` turns a raw event of version ``n`` into one of version ``n + 1``."""

MAX_REASON_LENGTH = 1024
"""Longest reason (a refusal's, a failure's, a disconnect's, an abort's), in characters."""

MAX_CODE_LENGTH = 64
"""Longest refusal code, in characters."""

MAX_CLAIMED_ID_LENGTH = 256
"""Longest user id a refusal records as claimed (a refused peer may claim anything)."""

MAX_URL_LENGTH = 4096
"""Longest resolvable URL or ``piece_finished`` source (as long as a config's resolvable URL)."""

MAX_PATH_LENGTH = 4096
"""Longest folder path a ``folder_rejected`` names."""

MAX_FAILURES = 16
"""Most resolvable failures one ``piece_failed`` carries (the first ones tried)."""

MAX_REPORT_EVENT_BYTES = 512 * 1024
"""The largest encoding of any event a member may report (a ``piece_failed`` with
:data:`MAX_FAILURES` failures whose URLs and reasons are as long as allowed and need JSON's
six-byte escapes throughout): what one accepted report can add to a room's history."""

_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.\-]*"

# Events name users and pieces by the ids of a room config that was validated in full. Here the
# shape is checked (cheaply, by pydantic's own regex engine, on the replay's hot path); that the
# user and the piece belong to the room is checked by the fold, which refuses any other.
SafeName = Annotated[str, StringConstraints(max_length=MAX_NAME_LENGTH, pattern=f"^{_NAME}$")]
PieceAddress = Annotated[
    str, StringConstraints(max_length=2 * MAX_NAME_LENGTH + 1, pattern=f"^{_NAME}/{_NAME}$")
]


Reason = Annotated[str, StringConstraints(max_length=MAX_REASON_LENGTH)]
"""A reason: any text, at most :data:`MAX_REASON_LENGTH` characters."""

Count = Annotated[int, Field(ge=0, le=MAX_EXACT_INTEGER)]
"""A count of bytes or events, a version, an index: 0 to 2**53 - 1 (exact in any JSON reader)."""


def clip(text: str, limit: int = MAX_REASON_LENGTH) -> str:
    """``text`` cut to at most ``limit`` characters, in the middle (what it is about comes
    first, and why, last), marked by an ellipsis."""
    if len(text) <= limit:
        return text
    keep = limit - 3
    return text[: keep - keep // 2] + " … " + text[len(text) - keep // 2 :]


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    decision: ClassVar[bool] = False
    """Whether losing this event would lose a decision: a log is fsynced when a batch holds
    one (:data:`DECISIONS`; ``docs/durability.md``)."""

    v: Count = EVENT_SCHEMA_VERSION
    at: float = Field(
        description="When it happened, by the caller's clock (seconds since the epoch)."
    )


class RoomOpened(_Event):
    """A room opened from its config, which every expected user signed and which pins every
    expected piece's content (its sizes bound the progress reports)."""

    type: Literal["room_opened"] = "room_opened"
    decision: ClassVar[bool] = True
    config: RoomConfig

    def describe(self) -> str:
        """One line saying what this event means (raw text: :func:`matchlock.tools.render.describe`
        escapes it)."""
        config = self.config
        users = ", ".join(config.users)
        pieces = len(config.content)
        return f"room {config.room_id} opened: {len(config.users)} users ({users}), {pieces} pieces"


class DownloadOpened(_Event):
    """A download job started for ``user_id`` (``local`` by default) with these pieces' sizes."""

    type: Literal["download_opened"] = "download_opened"
    decision: ClassVar[bool] = True
    user_id: SafeName = "local"
    sizes: dict[PieceAddress, Count]

    def describe(self) -> str:
        """One line saying what this event means (raw text: :func:`matchlock.tools.render.describe`
        escapes it)."""
        return f"download opened for {self.user_id}: {len(self.sizes)} pieces"


class MemberJoined(_Event):
    """A member proved who they are and is connected."""

    type: Literal["member_joined"] = "member_joined"
    decision: ClassVar[bool] = True
    user_id: SafeName

    def describe(self) -> str:
        """One line saying what this event means (raw text: :func:`matchlock.tools.render.describe`
        escapes it)."""
        return f"{self.user_id} joined"


class MemberRefused(_Event):
    """Someone was refused; the room's state is unchanged. ``user_id`` is what they claimed."""

    type: Literal["member_refused"] = "member_refused"
    decision: ClassVar[bool] = True
    user_id: str = Field(max_length=MAX_CLAIMED_ID_LENGTH)
    code: str = Field(max_length=MAX_CODE_LENGTH)
    reason: Reason

    def describe(self) -> str:
        """One line saying what this event means (raw text: :func:`matchlock.tools.render.describe`
        escapes it)."""
        return f"refused {self.user_id!r} [{self.code}]: {self.reason}"


class MemberDisconnected(_Event):
    """A member's connection ended before goodbye."""

    type: Literal["member_disconnected"] = "member_disconnected"
    user_id: SafeName
    reason: Reason = ""

    def describe(self) -> str:
        """One line saying what this event means (raw text: :func:`matchlock.tools.render.describe`
        escapes it)."""
        return f"{self.user_id} disconnected" + (f": {self.reason}" if self.reason else "")


class MemberDone(_Event):
    """A member has every piece."""

    type: Literal["member_done"] = "member_done"
    decision: ClassVar[bool] = True
    user_id: SafeName

    def describe(self) -> str:
        """One line saying what this event means (raw text: :func:`matchlock.tools.render.describe`
        escapes it)."""
        return f"{self.user_id} has every piece"


class MemberGoodbye(_Event):
    """A done member said goodbye."""

    type: Literal["member_goodbye"] = "member_goodbye"
    decision: ClassVar[bool] = True
    user_id: SafeName

    def describe(self) -> str:
        """One line saying what this event means (raw text: :func:`matchlock.tools.render.describe`
        escapes it)."""
        return f"{self.user_id} said goodbye"


class PieceStarted(_Event):
    """A member started getting a piece (checking, then downloading)."""

    type: Literal["piece_started"] = "piece_started"
    user_id: SafeName
    piece: PieceAddress

    def describe(self) -> str:
        """One line saying what this event means (raw text: :func:`matchlock.tools.render.describe`
        escapes it)."""
        return f"{self.user_id} {self.piece}: started"


class PieceProgress(_Event):
    """Bytes of a piece obtained so far from the current resolvable."""

    type: Literal["piece_progress"] = "piece_progress"
    user_id: SafeName
    piece: PieceAddress
    done: Count

    def describe(self) -> str:
        """One line saying what this event means (raw text: :func:`matchlock.tools.render.describe`
        escapes it)."""
        return f"{self.user_id} {self.piece}: {self.done:,} bytes"


class ResolvableFailure(BaseModel):
    """Why one resolvable did not yield the piece."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    index: Count
    url: str = Field(max_length=MAX_URL_LENGTH)
    reason: Reason


class ResolvableFailed(_Event):
    """One resolvable failed; the next one is tried (progress restarts from zero)."""

    type: Literal["resolvable_failed"] = "resolvable_failed"
    user_id: SafeName
    piece: PieceAddress
    failure: ResolvableFailure

    def describe(self) -> str:
        """One line saying what this event means (raw text: :func:`matchlock.tools.render.describe`
        escapes it)."""
        failure = self.failure
        return (
            f"{self.user_id} {self.piece}: resolvable {failure.index} {failure.url} failed: "
            f"{failure.reason}"
        )


class FolderRejected(_Event):
    """A folder that could have held the piece (``where``: the game's files or the cache) does
    not verify, so it is not used; ``reason`` says what differs. The piece is installed afresh."""

    type: Literal["folder_rejected"] = "folder_rejected"
    user_id: SafeName
    piece: PieceAddress
    folder: str = Field(max_length=MAX_PATH_LENGTH)
    where: Literal["engine", "cache"]
    reason: Reason

    def describe(self) -> str:
        """One line saying what this event means (raw text: :func:`matchlock.tools.render.describe`
        escapes it)."""
        where = f"{self.where} folder {self.folder}"
        return f"{self.user_id} {self.piece}: {where} not used: {self.reason}"


class PieceFinished(_Event):
    """A member has a piece, verified. ``source`` is ``cache``, ``engine`` or a resolvable URL."""

    type: Literal["piece_finished"] = "piece_finished"
    decision: ClassVar[bool] = True
    user_id: SafeName
    piece: PieceAddress
    source: str = Field(default="", max_length=MAX_URL_LENGTH)

    def describe(self) -> str:
        """One line saying what this event means (raw text: :func:`matchlock.tools.render.describe`
        escapes it)."""
        source = f" from {self.source}" if self.source else ""
        return f"{self.user_id} {self.piece}: finished{source}"


class PieceFailed(_Event):
    """Every resolvable failed: the piece is in error, with each resolvable's reason."""

    type: Literal["piece_failed"] = "piece_failed"
    decision: ClassVar[bool] = True
    user_id: SafeName
    piece: PieceAddress
    failures: Annotated[tuple[ResolvableFailure, ...], Field(max_length=MAX_FAILURES)] = ()

    def describe(self) -> str:
        """One line saying what this event means (raw text: :func:`matchlock.tools.render.describe`
        escapes it)."""
        failed = f"error after {len(self.failures)} resolvable(s) failed"
        return f"{self.user_id} {self.piece}: {failed}"


class PieceRetried(_Event):
    """A piece in error goes back to not started, to be tried again."""

    type: Literal["piece_retried"] = "piece_retried"
    user_id: SafeName
    piece: PieceAddress

    def describe(self) -> str:
        """One line saying what this event means (raw text: :func:`matchlock.tools.render.describe`
        escapes it)."""
        return f"{self.user_id} {self.piece}: retried"


class RoomAllDone(_Event):
    """Every member has every piece."""

    type: Literal["room_all_done"] = "room_all_done"
    decision: ClassVar[bool] = True

    def describe(self) -> str:
        """One line saying what this event means (raw text: :func:`matchlock.tools.render.describe`
        escapes it)."""
        return "everyone has everything"


class RoomClosed(_Event):
    """Every member said goodbye; the room is closed."""

    type: Literal["room_closed"] = "room_closed"
    decision: ClassVar[bool] = True

    def describe(self) -> str:
        """One line saying what this event means (raw text: :func:`matchlock.tools.render.describe`
        escapes it)."""
        return "room closed"


class RoomAborted(_Event):
    """The room ended without completing (deadline, host decision)."""

    type: Literal["room_aborted"] = "room_aborted"
    decision: ClassVar[bool] = True
    reason: Reason

    def describe(self) -> str:
        """One line saying what this event means (raw text: :func:`matchlock.tools.render.describe`
        escapes it)."""
        return f"room aborted: {self.reason}"


class DownloadClosed(_Event):
    """A download job ended (whatever each piece's outcome)."""

    type: Literal["download_closed"] = "download_closed"
    decision: ClassVar[bool] = True

    def describe(self) -> str:
        """One line saying what this event means (raw text: :func:`matchlock.tools.render.describe`
        escapes it)."""
        return "download closed"


OptionalName = Annotated[
    str, StringConstraints(max_length=MAX_NAME_LENGTH, pattern=f"^({_NAME})?$")
]
"""A user id, or '' for none."""

TransferForm = Literal["archive", "folder"]
"""What a transfer carried (:data:`matchlock.core.transfer_messages.Form`)."""


class TransferReceived(_Event):
    """Member-local: what this member (``user_id``) got of ``piece`` from ``holder`` ('' when no
    member could serve it): ``bytes`` from ``offset`` in ``form``, and how it ended
    (``verified``; ``corrupt``: the bytes did not verify, ``reason`` says what arrived; ``cut``,
    ``stalled``, ``unavailable``, ``refused``)."""

    type: Literal["transfer_received"] = "transfer_received"
    user_id: SafeName
    piece: PieceAddress
    holder: OptionalName = ""
    form: TransferForm
    offset: Count = 0
    bytes: Count = 0
    outcome: Literal["verified", "corrupt", "cut", "stalled", "unavailable", "refused"]
    reason: Reason = ""

    def describe(self) -> str:
        """One line saying what this event means (raw text: :func:`matchlock.tools.render.describe`
        escapes it)."""
        holder = f" from {self.holder}" if self.holder else ""
        why = f": {self.reason}" if self.reason else ""
        got = f"{self.bytes:,} bytes of {self.piece} ({self.form}, from byte {self.offset:,})"
        return f"{self.user_id} got {got}{holder}: {self.outcome}{why}"


class TransferServed(_Event):
    """Member-local: what this member (``user_id``) sent of ``piece`` to ``requester``:
    ``bytes`` from ``offset`` in ``form``, and how it ended (``sent``, ``cut``, ``unheld``,
    ``cancelled``; ``reason`` says why)."""

    type: Literal["transfer_served"] = "transfer_served"
    user_id: SafeName
    piece: PieceAddress
    requester: SafeName
    form: TransferForm
    offset: Count = 0
    bytes: Count = 0
    outcome: Literal["sent", "cut", "unheld", "cancelled"]
    reason: Reason = ""

    def describe(self) -> str:
        """One line saying what this event means (raw text: :func:`matchlock.tools.render.describe`
        escapes it)."""
        why = f": {self.reason}" if self.reason else ""
        sent = f"{self.bytes:,} bytes of {self.piece} ({self.form}, from byte {self.offset:,})"
        return f"{self.user_id} served {sent} to {self.requester}: {self.outcome}{why}"


PieceEvent = (
    PieceStarted
    | PieceProgress
    | ResolvableFailed
    | FolderRejected
    | PieceFinished
    | PieceFailed
    | PieceRetried
)
"""An event about one member's piece: what a member reports (``report``), and what the fold
applies to a piece's machine."""

Event = Annotated[
    RoomOpened
    | DownloadOpened
    | MemberJoined
    | MemberRefused
    | MemberDisconnected
    | MemberDone
    | MemberGoodbye
    | PieceEvent
    | RoomAllDone
    | RoomClosed
    | RoomAborted
    | DownloadClosed
    | TransferReceived
    | TransferServed,
    Field(discriminator="type"),
]
"""Any event, discriminated by its ``type``."""

MEMBER_LOCAL = (TransferReceived, TransferServed)
"""The member-local event classes: in a member's own log only, ignored by the room's fold."""

EVENT_TYPES: tuple[type[_Event], ...] = get_args(get_args(Event)[0])
"""Every event class of :data:`Event`, in its order."""

DECISIONS = frozenset(kind.model_fields["type"].default for kind in EVENT_TYPES if kind.decision)
"""The ``type`` of every event whose loss would lose a decision (``decision = True`` on its
class, declared there once)."""

EventAdapter: TypeAdapter[Event] = TypeAdapter(Event)
"""Validates and serialises :data:`Event` (``EventAdapter.validate_json(...)``)."""
