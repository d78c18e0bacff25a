"""The room's resolver: a piece from a room member who holds it, over the room's own connection.

A member of a room (:mod:`matchlock.app.joining`) opens one :class:`RoomResolver` for the whole
join and gives it to every download job as the resolver of ``room:``; the member's shell hands
it every transfer message and data frame the host sends (:meth:`RoomResolver.receive`) and says
when the room changed (:meth:`RoomResolver.room_changed`), when the link to a host that speaks
peers is up (:meth:`RoomResolver.link_up`) and when it is lost (:meth:`RoomResolver.link_down`).

For one piece (:meth:`RoomResolver.obtain`), per form the piece pins (its archive first, then
its folder stream):

- ``want`` the piece from the part's offset, avoiding every holder that failed it;
- ``sending``: write the holder's data frames into the part (bounded by the form's bound,
  :class:`~matchlock.downloads.resolvers.base.Staging`), ``ack`` each, and on ``end`` let the
  caller verify the whole (the archive's sha256, or the folder stream unpacked and checked
  against the folder digest). Bytes that do not verify are a failure naming the holder and what
  arrived; the part is emptied and that holder avoided;
- a ``cut`` (the holder left, could not serve it) or a lost link: ask again from the part's
  offset; a holder cut twice, or that said it cannot serve it, is avoided;
- silence for the policy's ``read_timeout``: ``cancel``, and :class:`Transient`;
- ``unavailable``: wait until the room changes and ask again (when the room is the piece's last
  source; otherwise :class:`Transient` at once, so that its other sources are tried first);
  :class:`NotFound` when no other member can come to hold the piece (each has failed it, does
  not serve, or failed us).

Each failure is told to the caller as it happens (``RoomRequest.failed``) and names the holder
(``room:bob``); each transfer ends in a member-local ``transfer_received`` event. Nothing here
ever trusts a byte: verification is the caller's, before anything is installed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from matchlock.core import events as ev
from matchlock.core import protocol as pr
from matchlock.core import transfer_messages as tm
from matchlock.core.config import RoomConfig
from matchlock.core.machines import MemberStatus, PieceStatus, RoomStatus
from matchlock.core.room import Room
from matchlock.downloads.resolvers.base import (
    Corrupt,
    NotFound,
    Refused,
    ResolveFailed,
    Staging,
    TooLarge,
    Transient,
    Wanted,
)

__all__ = [
    "CUTS_BEFORE_AVOIDED",
    "ROOM_SCHEME",
    "ROOM_URL",
    "Delivered",
    "Form",
    "RoomRequest",
    "RoomResolver",
]

ROOM_SCHEME = "room"
"""The scheme a download job knows the room's resolver by."""

ROOM_URL = "room:"
"""The source a piece's turns see for the room (a holder is ``room:<user>``)."""

CUTS_BEFORE_AVOIDED = 2
"""Transfers of one piece cut with the same holder before it is avoided for that piece."""

UNHELD_CUT = "cannot serve it"
"""How the host's ``cut`` begins, after the holder's name, when the holder said ``unheld``: that
holder is avoided for the piece at once."""

_BATCH_BYTES = 1 << 20
"""Data frames already arrived are written in batches of about this many bytes."""

_FINISHED_ROOM = frozenset({RoomStatus.ALL_DONE, RoomStatus.GOODBYE, RoomStatus.CLOSED})


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
class _Lost:
    """The link to the host was lost."""


_Item = tm.Sending | tm.Unavailable | tm.End | tm.Cut | pr.DataChunk | _Lost


class _Inbox:
    """What the host said about one piece, in order (unbounded: the host's window bounds the
    data frames of a transfer, and the rest are a few messages)."""

    def __init__(self) -> None:
        self._items: deque[_Item] = deque()
        self._arrived = asyncio.Event()

    def put_nowait(self, item: _Item) -> None:
        """Add ``item``."""
        self._items.append(item)
        self._arrived.set()

    async def get(self) -> _Item:
        """The oldest item, once there is one."""
        while not self._items:
            self._arrived.clear()
            await self._arrived.wait()
        return self._items.popleft()

    def take_data(self, offset: int) -> pr.DataChunk | None:
        """The oldest item if it is a data frame of ``offset``, taken; else None."""
        head = self._items[0] if self._items else None
        if isinstance(head, pr.DataChunk) and head.offset == offset:
            self._items.popleft()
            return head
        return None

    def clear(self) -> None:
        """Drop every item."""
        self._items.clear()


@dataclass
class _Asking:
    """One piece being asked for: what the host says about it arrives in ``inbox``."""

    key: str
    inbox: _Inbox = field(default_factory=_Inbox)
    transfer: int | None = None


class RoomResolver:
    """Gets pieces from room members for ``user_id`` in ``room``; see the module docs.
    ``view`` is the room as the host tells it, ``holders(piece)`` the members that hold a
    piece and serve it, as far as this member knows. ``record`` receives this member's
    ``transfer_received`` events, stamped by ``clock``; ``read_timeout`` is the longest silence
    of a holder or the host (seconds)."""

    def __init__(
        self,
        room: RoomConfig,
        user_id: str,
        view: Room,
        holders: Callable[[str], list[str]],
        *,
        record: Callable[[ev.Event], None],
        clock: Callable[[], float],
        read_timeout: float = 30.0,
    ) -> None:
        self._config = room
        self._user = user_id
        self._view = view
        self._holders = holders
        self._record = record
        self._clock = clock
        self.read_timeout = read_timeout
        self._send: Callable[[bytes], None] | None = None
        self._peers: bool | None = None  # None: not welcomed yet
        self._asking: dict[str, _Asking] = {}
        self._by_transfer: dict[int, _Asking] = {}
        self._changed = asyncio.Event()

    # -- the member's shell ---------------------------------------------------------------------

    def link_up(self, send: Callable[[bytes], None] | None) -> None:
        """Welcomed: ``send`` sends a frame to the host, or None when the host does not speak
        peers (protocol 1)."""
        self._send = send
        self._peers = send is not None
        self.room_changed()

    def link_down(self) -> None:
        """The connection is gone: every running transfer is lost (asked again once back)."""
        self._send = None
        self._by_transfer.clear()
        for asking in self._asking.values():
            asking.transfer = None
            asking.inbox.put_nowait(_Lost())

    def room_changed(self) -> None:
        """Something that may make a piece available happened (a member joined, finished a
        piece): every piece waiting on ``unavailable`` asks again."""
        self._changed.set()
        self._changed = asyncio.Event()

    def receive(self, message: _Item) -> None:
        """A transfer message or data frame from the host for this member as a requester."""
        match message:
            case tm.Sending(piece=key) | tm.Unavailable(piece=key):
                asking = self._asking.get(key)
            case tm.End(transfer=transfer) | tm.Cut(transfer=transfer):
                asking = self._by_transfer.pop(transfer, None)
            case pr.DataChunk(transfer=transfer):
                asking = self._by_transfer.get(transfer)
            case _:
                asking = None
        if asking is not None:
            if isinstance(message, tm.Sending):
                asking.transfer = message.transfer
                self._by_transfer[message.transfer] = asking
            asking.inbox.put_nowait(message)

    # -- the resolver seam ----------------------------------------------------------------------

    def host(self, url: str) -> str | None:
        """None: the room is never a host found down (its holders are chosen per request)."""
        return None

    async def fetch(self, url: str, wanted: Wanted, staging: Staging, *, resume: bool) -> None:
        """The :class:`~matchlock.downloads.resolvers.base.Resolver` call: the piece's archive
        from the room, checked afterwards by the caller (only :meth:`obtain` avoids a holder
        whose bytes do not verify)."""

        async def unchecked(form: Form) -> str | None:
            return None

        def ignored(failure: ResolveFailed) -> None:
            pass

        forms = (Form("archive", staging),)
        await self.obtain(RoomRequest(wanted.key, forms, resume, unchecked, ignored))

    async def obtain(self, request: RoomRequest) -> Delivered:
        """The piece, verified, in one of ``request.forms``; raises :class:`NotFound` when no
        member can come to hold it, :class:`Transient` when a holder or the host went silent,
        :class:`Refused` when the host does not speak peers."""
        if request.key in self._asking:
            raise Refused(f"{request.key} is being asked of the room already")
        asking = _Asking(request.key)
        self._asking[request.key] = asking
        try:
            last: NotFound | None = None
            for form in request.forms:
                try:
                    return await _Transfer(self, asking, request, form).run()
                except NotFound as error:
                    last = error
            raise last or NotFound(f"{request.key} pins no form the room can send")
        finally:
            del self._asking[request.key]
            if asking.transfer is not None:
                self._by_transfer.pop(asking.transfer, None)

    # -- for _Transfer --------------------------------------------------------------------------

    def send(self, message: tm.MemberTransferMessage) -> bool:
        """Send ``message`` to the host; False when there is no link to send it on."""
        if self._send is None:
            return False
        self._send(pr.encode(message))
        return True

    def nobody_can(self, key: str, avoid: set[str]) -> str | None:
        """Why no other member can come to hold ``key`` (None while one still could)."""
        if self._peers is False:
            return "the host speaks protocol 1: pieces cannot come from room members"
        if self._view.status in _FINISHED_ROOM:
            return f"room {self._config.room_id} is {self._view.status}"
        holders = set(self._holders(key))
        hopeful = [
            user
            for user in self._config.users
            if user != self._user
            and user not in avoid
            and (user in holders or self._may_come(user, key))
        ]
        if hopeful:
            return None
        avoided = f"; avoided after failing: {', '.join(sorted(avoid))}" if avoid else ""
        return f"no other member of the room holds {key} or can come to hold it{avoided}"

    def _may_come(self, user: str, key: str) -> bool:
        """Whether ``user`` (not a holder now) may yet hold ``key`` and serve it: it has not
        failed it, and it is not connected with it finished without serving."""
        member = self._view.members.get(user)
        if member is None or key not in member.pieces:
            return True
        status = member.pieces[key].status
        if status == PieceStatus.ERROR:
            return False
        connected = member.status in (MemberStatus.CONNECTED, MemberStatus.DONE)
        return not (connected and status == PieceStatus.FINISHED)

    async def changed(self) -> None:
        """Wait until the room changes or the link comes up."""
        await self._changed.wait()

    def linked(self) -> bool:
        """Whether there is a link to a host that speaks peers now."""
        return self._send is not None

    def transfer_done(self, asking: _Asking) -> None:
        """Forget the transfer ``asking`` ran."""
        if asking.transfer is not None:
            self._by_transfer.pop(asking.transfer, None)
            asking.transfer = None

    def received(self, sending: tm.Sending, count: int, outcome: str, why: str) -> None:
        """Record this member's ``transfer_received`` event of the transfer ``sending`` began."""
        self._record(
            ev.TransferReceived(
                at=self._clock(), user_id=self._user, piece=sending.piece, holder=sending.holder,
                form=sending.form, offset=sending.offset, bytes=count, outcome=outcome,
                reason=ev.clip(why),
            )
        )  # fmt: skip


class _Transfer:
    """One piece in one form asked of the room until it arrives verified or cannot come."""

    def __init__(
        self, resolver: RoomResolver, asking: _Asking, request: RoomRequest, form: Form
    ) -> None:
        self._room = resolver
        self._asking = asking
        self._request = request
        self._form = form
        self._key = request.key
        self._avoid: set[str] = set()
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
            await staging.restart()
            self._fail(Corrupt(f"{holder} sent {problem}", f"{ROOM_URL}{holder}"))

    async def _ask(self, offset: int) -> tm.Sending | None:
        """``want`` the piece; the host's ``sending``, or None to ask again."""
        while not self._room.linked():
            if (why := self._room.nobody_can(self._key, self._avoid)) is not None:
                raise NotFound(why)
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
                if (why := self._room.nobody_can(self._key, self._avoid)) is not None:
                    raise NotFound(f"{why} (the host: {reason})")
                if not self._request.wait:
                    raise Transient(f"no member can give {self._key} yet (the host: {reason})")
                await self._wait_change()
        return None

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
                case _Lost():
                    return self._cut(sending, "the connection to the host was lost")
                case pr.DataChunk(offset=offset, payload=payload):
                    if offset != staging.size:
                        return await self._misbehaved(
                            sending, f"sent byte {offset} when byte {staging.size} was due"
                        )
                    chunks = [payload, *self._more_data(offset + len(payload))]
                    held = staging.size + sum(len(chunk) for chunk in chunks)
                    if held <= staging.wanted.size:  # acked as soon as it is in hand: the
                        ack = tm.Ack(transfer=sending.transfer, offset=held)  # next window
                        self._room.send(ack)  # travels while this batch is being written
                    try:
                        await staging.write(chunks)
                    except TooLarge:
                        bound = staging.wanted.size
                        return await self._misbehaved(sending, f"sent more than {bound} bytes")
                case _:
                    pass  # a late answer to an earlier want

    def _more_data(self, offset: int) -> list[bytes]:
        """Data frames already queued right after ``offset`` (written in one batch)."""
        chunks: list[bytes] = []
        size = 0
        while size < _BATCH_BYTES and (chunk := self._asking.inbox.take_data(offset)) is not None:
            chunks.append(chunk.payload)
            offset += len(chunk.payload)
            size += len(chunk.payload)
        return chunks

    async def _next(self, sending: tm.Sending | None) -> _Item:
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
        return Transient(f"{holder} {why} at byte {held}; cancelled", f"{ROOM_URL}{holder}")

    async def _misbehaved(self, sending: tm.Sending, why: str) -> bool:
        """Cancel a transfer whose holder broke it, avoid the holder, empty the part."""
        self._room.send(tm.Cancel(transfer=sending.transfer, reason=why))
        self._note(sending, "refused", why)
        self._room.transfer_done(self._asking)
        holder = sending.holder
        self._avoid.add(holder)
        await self._form.staging.restart()
        self._fail(Corrupt(f"{holder} {why}; cancelled", f"{ROOM_URL}{holder}"))
        return False

    def _cut(self, sending: tm.Sending, reason: str) -> bool:
        """A transfer cut short: told as a failure, asked again from the part's offset (a
        holder cut :data:`CUTS_BEFORE_AVOIDED` times is avoided)."""
        holder = sending.holder
        self._note(sending, "cut", reason)
        self._room.transfer_done(self._asking)
        self._cuts[holder] = self._cuts.get(holder, 0) + 1
        unheld = reason.startswith(f"{holder} {UNHELD_CUT}")  # it said it cannot: not again
        if unheld or self._cuts[holder] >= CUTS_BEFORE_AVOIDED:
            self._avoid.add(holder)
        held = self._form.staging.size
        why = f"{holder}'s transfer was cut at byte {held}: {reason}"
        self._fail(Transient(why, f"{ROOM_URL}{holder}"))
        return False

    def _fail(self, failure: ResolveFailed) -> None:
        self._request.failed(failure)

    def _note(self, sending: tm.Sending, outcome: str, why: str) -> None:
        count = self._form.staging.size - sending.offset
        self._room.received(sending, max(count, 0), outcome, why)

    def _drain_stale(self) -> None:
        """Drop what the host said about an earlier transfer of this piece."""
        self._asking.inbox.clear()

    async def _wait_change(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._room.changed(), self._room.read_timeout)
