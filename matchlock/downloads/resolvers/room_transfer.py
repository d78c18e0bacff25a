"""One piece asked of the room in one form, until it arrives verified or cannot come: the
requester's half of a transfer, driven by :class:`~matchlock.downloads.resolvers.room.RoomResolver`.

:class:`Transfer` sends ``want`` (from the part's offset, avoiding the holders that failed the
piece), writes the holder's data frames through the form's
:class:`~matchlock.downloads.resolvers.base.Staging` and acks them, has the caller verify the
whole at ``end``, and asks again after a cut, a lost link or bytes that did not verify; it raises
:class:`~matchlock.downloads.resolvers.base.Transient` when a holder or the host goes silent
and :class:`~matchlock.downloads.resolvers.base.NotFound` when no member can come to hold the
piece. What the host says about the piece reaches it through an :class:`Inbox`. It trusts no
byte it writes: the caller's ``verify`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from matchlock.core import protocol as pr
from matchlock.core import transfer_messages as tm
from matchlock.downloads.resolvers.base import (
    Corrupt,
    NotFound,
    ResolveFailed,
    Staging,
    TooLarge,
    Transient,
)

__all__ = [
    "CUTS_BEFORE_AVOIDED",
    "EAGER_ACK_BYTES",
    "LEFT_CUT",
    "ROOM_URL",
    "UNHELD_CUT",
    "Asking",
    "Delivered",
    "Form",
    "Inbox",
    "Lost",
    "RoomLink",
    "RoomRequest",
    "Transfer",
]

ROOM_URL = "room:"
"""The source a piece's turns see for the room (a holder is ``room:<user>``)."""

CUTS_BEFORE_AVOIDED = 2
"""Transfers of one piece cut with the same holder before it is avoided for that piece."""

EAGER_ACK_BYTES = 8 << 20
"""Data frames are acked as they arrive while at most this many of their bytes wait to be
written; beyond it, only once they are handed to the part (the holder then waits)."""

UNHELD_CUT = "cannot serve it"
"""How the host's ``cut`` begins, after the holder's name, when the holder said ``unheld``: that
holder is avoided for the piece at once."""

LEFT_CUT = "disconnected"
"""The host's whole ``cut`` reason, after the holder's name, when the holder's connection ended:
not counted against it (the host chooses it again only once it is back, and then it may
serve; counting such cuts had two requesters avoid both holders of a piece that each dropped
twice, and wait for each other until the deadline)."""

_BATCH_BYTES = 1 << 20
"""Data frames already arrived are written in batches of about this many bytes."""


@dataclass(frozen=True)
class Form:
    """One form a piece can come in, and the staging it is written through (bounded by the
    form's bound: the archive's size, or the folder stream's bound)."""

    name: tm.Form
    staging: Staging


@dataclass(frozen=True)
class Delivered:
    """Who gave the piece and in which form; the bytes are in the part, verified."""

    holder: str
    form: tm.Form


@dataclass(frozen=True)
class RoomRequest:
    """One piece asked of the room: ``forms`` in the order to try, whether the part's bytes
    may be continued (``resume``), ``verify`` (called once a holder said ``end``: None when the
    part holds the form verified, else what arrived), ``failed`` (told each holder's failure,
    before the next holder is asked) and ``wait``: whether to wait while no member can give the
    piece yet (the room is the piece's last source) rather than fail :class:`Transient` at once
    (other sources may give it, and the room is asked again after them)."""

    key: str
    forms: tuple[Form, ...]
    resume: bool
    verify: Callable[[Form], Awaitable[str | None]]
    failed: Callable[[ResolveFailed], None]
    wait: bool = True


@dataclass
class Lost:
    """The link to the host was lost."""


Item = tm.Sending | tm.Unavailable | tm.End | tm.Cut | pr.DataChunk | Lost
"""What the host says about one piece being asked for."""


class Inbox:
    """What the host said about one piece, in order, and how many payload bytes of data frames
    it holds (``data_bytes``: bounded, since bytes are acked on arrival only up to
    :data:`EAGER_ACK_BYTES` held here, and the host's window bounds the rest)."""

    def __init__(self) -> None:
        self._items: deque[Item] = deque()
        self._arrived = asyncio.Event()
        self.data_bytes = 0

    def put_nowait(self, item: Item) -> None:
        """Add ``item``."""
        self._items.append(item)
        self.data_bytes += _payload(item)
        self._arrived.set()

    async def get(self) -> Item:
        """The oldest item, once there is one."""
        while not self._items:
            self._arrived.clear()
            await self._arrived.wait()
        item = self._items.popleft()
        self.data_bytes -= _payload(item)
        return item

    def take_data(self, offset: int) -> pr.DataChunk | None:
        """The oldest item if it is a data frame of ``offset``, taken; else None."""
        head = self._items[0] if self._items else None
        if isinstance(head, pr.DataChunk) and head.offset == offset:
            self._items.popleft()
            self.data_bytes -= len(head.payload)
            return head
        return None

    def clear(self) -> None:
        """Drop every item."""
        self._items.clear()
        self.data_bytes = 0


def _payload(item: Item) -> int:
    return len(item.payload) if isinstance(item, pr.DataChunk) else 0


@dataclass
class Asking:
    """One piece being asked for: what the host says about it arrives in ``inbox``."""

    key: str
    inbox: Inbox = field(default_factory=Inbox)
    transfer: int | None = None
    acked: int = 0
    """The offset this member last acked in the running transfer."""


class RoomLink(Protocol):
    """What a :class:`Transfer` needs of the room's resolver."""

    read_timeout: float

    def send(self, message: tm.MemberTransferMessage) -> bool:
        """Send ``message`` to the host; False without a link."""
        ...

    def linked(self) -> bool:
        """Whether a link to a host that speaks peers is up."""
        ...

    def liars(self, key: str, form: tm.Form) -> set[str]:
        """The holders whose bytes of ``key`` in ``form`` did not verify (kept across turns)."""
        ...

    def stallers(self, key: str, form: tm.Form) -> set[str]:
        """The holders that went silent sending ``key`` in ``form`` (kept across turns)."""
        ...

    def nobody_can(self, key: str, avoid: set[str]) -> str | None:
        """Why no other member can come to hold ``key``, or None."""
        ...

    async def changed(self) -> None:
        """Wait until the room changes or the link comes up."""
        ...

    def transfer_done(self, asking: Asking) -> None:
        """Forget the transfer ``asking`` ran."""
        ...

    def received(self, sending: tm.Sending, count: int, outcome: str, why: str) -> None:
        """Record this member's ``transfer_received`` event."""
        ...

    def unavailable(self, key: str, form: tm.Form, offset: int, why: str) -> None:
        """Record that no member could give ``key`` in ``form``."""
        ...


class Transfer:
    """One piece in one form asked of the room until it arrives verified or cannot come."""

    def __init__(
        self, resolver: RoomLink, asking: Asking, request: RoomRequest, form: Form
    ) -> None:
        self._room = resolver
        self._asking = asking
        self._request = request
        self._form = form
        self._key = request.key
        self._stallers = resolver.stallers(request.key, form.name)
        self._avoid: set[str] = set(resolver.liars(request.key, form.name)) | self._stallers
        self._cuts: dict[str, int] = {}
        self._resume = request.resume

    async def run(self) -> Delivered:
        """Ask, receive, verify; again after each failure, until delivered or given up."""
        staging = self._form.staging
        while True:
            offset = await staging.begin(resume=self._resume)
            self._resume = True
            sending = await self._ask(offset)
            if sending is None or not await self._receive(sending):
                continue  # the link was lost, the room changed, the transfer was cut
            holder = sending.holder
            problem = await self._request.verify(self._form)
            if problem is None:
                self._note(sending, "verified", "")
                return Delivered(holder, self._form.name)
            self._note(sending, "corrupt", problem)
            self._avoid.add(holder)
            self._room.liars(self._key, self._form.name).add(holder)
            await staging.restart()
            self._fail(Corrupt(f"{holder} sent {problem}", f"{ROOM_URL}{holder}"))

    async def _ask(self, offset: int) -> tm.Sending | None:
        """``want`` the piece; the host's ``sending``, or None to ask again."""
        while not self._room.linked():
            if (why := self._hopeless()) is not None:
                raise self._given_up(NotFound(why), offset)
            await self._wait_change()
        self._drain_stale()
        avoid = tuple(sorted(self._avoid))[: tm.MAX_AVOIDED]
        want = tm.Want(piece=self._key, form=self._form.name, offset=offset, avoid=avoid)
        if not self._room.send(want):
            return None
        answer = await self._next(None)
        match answer:
            case tm.Sending() if answer.offset == offset and answer.form == self._form.name:
                return answer
            case tm.Unavailable(reason=reason):
                if (why := self._hopeless()) is not None:
                    raise self._given_up(NotFound(f"{why} (the host: {reason})"), offset)
                if not self._request.wait:
                    why = f"no member can give {self._key} yet (the host: {reason})"
                    raise self._given_up(Transient(why), offset)
                if self._avoid & self._stallers:  # nobody else can give it now: ask them
                    self._avoid -= self._stallers  # again (waiting for someone who may come
                    self._stallers.clear()  # to hold it can wait for a member who waits too)
                    return None
                await self._wait_change()
        return None

    def _hopeless(self) -> str | None:
        """Why no member can come to give the piece, or None. Holders that went silent are
        avoided only while someone else may give it: then they are asked again."""
        why = self._room.nobody_can(self._key, self._avoid)
        if why is not None and self._avoid & self._stallers:
            self._avoid -= self._stallers
            self._stallers.clear()
            why = self._room.nobody_can(self._key, self._avoid)
        return why

    async def _receive(self, sending: tm.Sending) -> bool:
        """Write the holder's frames: True at ``end``, False when the transfer was cut or the
        holder misbehaved (told as a failure: ask again)."""
        staging = self._form.staging
        while True:
            item = await self._next(sending)
            match item:
                case tm.End():
                    self._room.transfer_done(self._asking)
                    return True
                case tm.Cut(reason=reason):
                    return self._cut(sending, reason)
                case Lost():  # this member's own link to the host: no fault of the holder's
                    return self._cut(sending, "the connection to the host was lost", blame=False)
                case pr.DataChunk(offset=offset, payload=payload):
                    if offset != staging.size:
                        return await self._misbehaved(
                            sending, f"sent byte {offset} when byte {staging.size} was due"
                        )
                    chunks = [payload, *self._more_data(offset + len(payload))]
                    held = staging.size + sum(len(chunk) for chunk in chunks)
                    if self._asking.acked < held <= staging.wanted.size:  # not acked on
                        self._asking.acked = held  # arrival: now, before the batch is written
                        self._room.send(tm.Ack(transfer=sending.transfer, offset=held))
                    try:
                        await staging.write(chunks)
                    except TooLarge:
                        bound = staging.wanted.size
                        return await self._misbehaved(sending, f"sent more than {bound} bytes")
                case _:
                    pass  # a late answer to an earlier want

    def _more_data(self, offset: int) -> list[bytes | memoryview]:
        """Data frames already queued right after ``offset`` (written in one batch)."""
        chunks: list[bytes | memoryview] = []
        size = 0
        while size < _BATCH_BYTES and (chunk := self._asking.inbox.take_data(offset)) is not None:
            chunks.append(chunk.payload)
            offset += len(chunk.payload)
            size += len(chunk.payload)
        return chunks

    async def _next(self, sending: tm.Sending | None) -> Item:
        """The next item for this piece, or :class:`Transient` after ``read_timeout``."""
        try:
            return await asyncio.wait_for(self._asking.inbox.get(), self._room.read_timeout)
        except TimeoutError:
            pass
        if sending is None:
            why = f"the host did not answer a want of {self._key} in {self._room.read_timeout:g} s"
            raise Transient(why)
        raise self._stalled(sending)

    def _stalled(self, sending: tm.Sending) -> Transient:
        """Cancel a transfer whose holder went silent; the failure to raise (the part keeps
        its bytes: the next turn resumes from them)."""
        why = f"sent nothing for {self._room.read_timeout:g} s"
        self._room.send(tm.Cancel(transfer=sending.transfer, reason=why))
        self._note(sending, "stalled", why)
        self._room.transfer_done(self._asking)
        holder, held = sending.holder, self._form.staging.size
        self._stallers.add(holder)  # the next request asks another holder first
        return Transient(f"{holder} {why} at byte {held}; cancelled", f"{ROOM_URL}{holder}")

    async def _misbehaved(self, sending: tm.Sending, why: str) -> bool:
        """Cancel a transfer whose holder broke it, avoid the holder, empty the part."""
        self._room.send(tm.Cancel(transfer=sending.transfer, reason=why))
        self._note(sending, "refused", why)
        self._room.transfer_done(self._asking)
        holder = sending.holder
        self._avoid.add(holder)
        self._room.liars(self._key, self._form.name).add(holder)
        await self._form.staging.restart()
        self._fail(Corrupt(f"{holder} {why}; cancelled", f"{ROOM_URL}{holder}"))
        return False

    def _cut(self, sending: tm.Sending, reason: str, *, blame: bool = True) -> bool:
        """A transfer cut short: told as a failure, asked again from the part's offset (a
        holder cut :data:`CUTS_BEFORE_AVOIDED` times is avoided; a cut that is not the
        holder's doing, ``blame=False``, is not counted against it)."""
        holder = sending.holder
        self._note(sending, "cut", reason)
        self._room.transfer_done(self._asking)
        left = reason == f"{holder} {LEFT_CUT}"  # it may serve once it is back
        self._cuts[holder] = self._cuts.get(holder, 0) + (blame and not left)
        unheld = reason.startswith(f"{holder} {UNHELD_CUT}")  # it said it cannot: not again
        if unheld or self._cuts[holder] >= CUTS_BEFORE_AVOIDED:
            self._avoid.add(holder)
        held = self._form.staging.size
        why = f"{holder}'s transfer was cut at byte {held}: {reason}"
        self._fail(Transient(why, f"{ROOM_URL}{holder}"))
        return False

    def _fail(self, failure: ResolveFailed) -> None:
        self._request.failed(failure)

    def _given_up(self, failure: ResolveFailed, offset: int) -> ResolveFailed:
        """Record that nobody could give the piece now; the failure to raise."""
        self._room.unavailable(self._key, self._form.name, offset, failure.reason)
        return failure

    def _note(self, sending: tm.Sending, outcome: str, why: str) -> None:
        count = self._form.staging.size - sending.offset
        self._room.received(sending, max(count, 0), outcome, why)

    def _drain_stale(self) -> None:
        """Drop what the host said about an earlier transfer of this piece."""
        self._asking.inbox.clear()

    async def _wait_change(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._room.changed(), self._room.read_timeout)
