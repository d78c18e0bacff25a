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
- silence for the policy's ``read_timeout``: ``cancel``, and :class:`Transient` (the next
  request resumes from the part's offset, asking another holder first);
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
from collections.abc import Callable

from matchlock.core import events as ev
from matchlock.core import protocol as pr
from matchlock.core import transfer_messages as tm
from matchlock.core.config import RoomConfig
from matchlock.core.machines import MemberStatus, PieceStatus, RoomStatus
from matchlock.core.room import Room
from matchlock.downloads.resolvers.base import NotFound, Refused, ResolveFailed, Staging, Wanted
from matchlock.downloads.resolvers.room_transfer import (
    CUTS_BEFORE_AVOIDED,
    EAGER_ACK_BYTES,
    ROOM_URL,
    Asking,
    Delivered,
    Form,
    Item,
    Lost,
    RoomRequest,
    Transfer,
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

_FINISHED_ROOM = frozenset({RoomStatus.ALL_DONE, RoomStatus.GOODBYE, RoomStatus.CLOSED})


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
        self._asking: dict[str, Asking] = {}
        self._by_transfer: dict[int, Asking] = {}
        self._changed = asyncio.Event()
        self._liars: dict[tuple[str, str], set[str]] = {}  # (piece, form) -> bad bytes from
        self._stallers: dict[tuple[str, str], set[str]] = {}  # (piece, form) -> went silent

    def liars(self, key: str, form: tm.Form) -> set[str]:
        """The holders whose bytes of ``key`` in ``form`` did not verify, or who broke its
        transfer, in any request of this join: every later request avoids them too (a lost
        link or a silent holder ends a request, not what it learnt)."""
        return self._liars.setdefault((key, form), set())

    def stallers(self, key: str, form: tm.Form) -> set[str]:
        """The holders that went silent sending ``key`` in ``form``: a later request avoids
        them while another member may give the piece (then asks them again)."""
        return self._stallers.setdefault((key, form), set())

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
            asking.inbox.put_nowait(Lost())

    def room_changed(self) -> None:
        """Something that may make a piece available happened (a member joined, finished a
        piece): every piece waiting on ``unavailable`` asks again."""
        self._changed.set()
        self._changed = asyncio.Event()

    def receive(self, message: Item) -> None:
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
        if asking is None:
            return
        if isinstance(message, tm.Sending):
            asking.transfer, asking.acked = message.transfer, message.offset
            self._by_transfer[message.transfer] = asking
        asking.inbox.put_nowait(message)
        if isinstance(message, pr.DataChunk) and asking.inbox.data_bytes <= EAGER_ACK_BYTES:
            held = message.offset + len(message.payload)  # in hand: the holder goes on
            if held > asking.acked:
                asking.acked = held
                self.send(tm.Ack(transfer=message.transfer, offset=held))

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
        asking = Asking(request.key)
        self._asking[request.key] = asking
        try:
            last: NotFound | None = None
            for form in request.forms:
                try:
                    return await Transfer(self, asking, request, form).run()
                except NotFound as error:
                    last = error
            raise last or NotFound(f"{request.key} pins no form the room can send")
        finally:
            del self._asking[request.key]
            if asking.transfer is not None:
                self._by_transfer.pop(asking.transfer, None)

    # -- for Transfer ---------------------------------------------------------------------------

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

    def transfer_done(self, asking: Asking) -> None:
        """Forget the transfer ``asking`` ran."""
        if asking.transfer is not None:
            self._by_transfer.pop(asking.transfer, None)
            asking.transfer = None

    def unavailable(self, key: str, form: tm.Form, offset: int, why: str) -> None:
        """Record that no member could give ``key`` in ``form`` (this request gives up)."""
        self._record(
            ev.TransferReceived(
                at=self._clock(), user_id=self._user, piece=key, form=form, offset=offset,
                outcome="unavailable", reason=ev.clip(why),
            )
        )  # fmt: skip

    def received(self, sending: tm.Sending, count: int, outcome: str, why: str) -> None:
        """Record this member's ``transfer_received`` event of the transfer ``sending`` began."""
        self._record(
            ev.TransferReceived(
                at=self._clock(), user_id=self._user, piece=sending.piece, holder=sending.holder,
                form=sending.form, offset=sending.offset, bytes=count, outcome=outcome,
                reason=ev.clip(why),
            )
        )  # fmt: skip
