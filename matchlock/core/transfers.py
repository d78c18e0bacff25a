"""The host's side of peer transfers: who serves a piece to whom, and every check of the bytes
it relays between them (protocol version 2).

A member sends ``want`` for a piece; :class:`Transfers` picks a holder among the connected
members of the same room that said hello with protocol 2 and ``serve``, are not the requester
nor one of those it asked to ``avoid``, hold the piece ``finished`` in the room's state and run
fewer than :data:`~matchlock.core.transfer_messages.MAX_UPLOADS_PER_MEMBER` uploads: the one
with the fewest running uploads, then the fewest served so far, then the first user id (so
requesters spread across holders). It tells the requester ``sending`` and the holder ``serve``,
with a transfer id of its own (1 .. 2**32 - 1, unique while this host runs), or the requester
``unavailable``.

Then it relays: each data frame of the holder goes to the requester, as the same bytes object,
only when the transfer is running and the sender is its holder (``bad-transfer``), its offset
is exactly the next byte expected (``bad-offset``), it ends within the form's bound (the pinned
``size`` for an archive, :func:`~matchlock.core.folderstream.folder_stream_bound` of
``folder_size`` for a folder: ``too-large``), and the bytes sent and not yet acknowledged stay
within :data:`~matchlock.core.transfer_messages.TRANSFER_WINDOW_BYTES` (``window-exceeded``).
So a host holds at most one window per transfer, whatever the piece's size. A frame that breaks
a rule is not relayed, the transfer is cut (both sides are told ``cut``) and the sender is
refused with the code. Acknowledgements go to the holder, ``end`` to the requester; ``unheld``,
``cancel`` and either side leaving cut the transfer and tell the other side.

Messages that arrive for a transfer this connection took part in and that was cut or ended a
moment ago (frames in flight) are dropped without a refusal: a correct member is never refused
for a race. Nothing here is recorded in a room's log: transfers are between connections, the
room's state only says who holds what.

Pure core: no sockets, no clock, no randomness, no files.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import assert_never

from matchlock.core import events as ev
from matchlock.core import protocol as pr
from matchlock.core import transfer_messages as tm
from matchlock.core.config import PinnedPiece, is_safe_name
from matchlock.core.folderstream import folder_stream_bound
from matchlock.core.hosted import ConnId, HostOutput
from matchlock.core.room import Room

__all__ = ["REMEMBERED_CLOSED", "Refusal", "Transfer", "Transfers", "form_bound"]

REMEMBERED_CLOSED = 64
"""Transfers per connection, cut or ended last, whose late messages are dropped silently."""

Refusal = tuple[str, str]
"""A refusal the host sends the member (and records): its code and its reason."""

_NOT_JOINED: Refusal = ("out-of-order", "transfers need a member welcomed with protocol 2")


def form_bound(pinned: PinnedPiece, form: tm.Form) -> int | None:
    """The most bytes a transfer of ``form`` may carry for a piece pinned as ``pinned``, or
    None when that form is not pinned."""
    if form == "archive":
        archive = pinned.archive
        return None if archive is None else archive[1]
    folder = pinned.folder
    return None if folder is None else folder_stream_bound(folder[1])


def _peer_frame(user_id: str, serve: bool) -> bytes:
    """``pr.encode(tm.Peer(user_id=user_id, serve=serve))``, the same bytes, without the model
    (every join of protocol 2 tells the room's other members): a safe name needs no escape."""
    if type(serve) is not bool or not is_safe_name(user_id):
        return pr.encode(tm.Peer(user_id=user_id, serve=serve))
    return b'{"type":"peer","user_id":"%s","serve":%s}' % (
        user_id.encode(),
        b"true" if serve else b"false",
    )


@dataclass
class Transfer:
    """One running transfer: ``holder`` sends ``piece`` in ``form`` to ``requester``; ``sent``
    is the next byte expected from the holder, ``acked`` the requester's last ack."""

    id: int
    piece: str
    form: tm.Form
    requester: ConnId
    holder: ConnId
    bound: int
    sent: int
    acked: int


@dataclass
class _Peer:
    room_id: str
    user_id: str
    serve: bool
    uploads: set[int] = field(default_factory=set)
    served: int = 0
    wants: dict[str, int] = field(default_factory=dict)  # piece -> transfer requested
    closed: deque[int] = field(default_factory=lambda: deque(maxlen=REMEMBERED_CLOSED))


class Transfers:
    """Every running transfer of a host. The host calls :meth:`join` when a member of protocol
    2 is welcomed, :meth:`receive` with its transfer messages, :meth:`data` with its data
    frames, and :meth:`leave` when its connection goes; each may add frames to the output and
    returns a :class:`Refusal` for the host to send, or None."""

    def __init__(self) -> None:
        self._peers: dict[ConnId, _Peer] = {}
        self._in_room: dict[str, dict[ConnId, _Peer]] = {}  # the same peers by room: a join
        # or a want looks at its own room's, not at every connection of the host
        self._running: dict[int, Transfer] = {}
        self._last_id = 0

    @property
    def running(self) -> dict[int, Transfer]:
        """The transfers running now, by id (read only: for checks and diagnostics)."""
        return self._running

    def serving(self, room_id: str) -> list[str]:
        """The users connected to ``room_id`` with protocol 2 that serve (a welcome's list)."""
        return sorted(p.user_id for p in self._in_room.get(room_id, {}).values() if p.serve)

    def join(self, conn: ConnId, room_id: str, user_id: str, serve: bool, out: HostOutput) -> None:
        """``conn`` joined ``room_id`` as ``user_id`` with protocol 2: every other member of
        protocol 2 there is told whether it serves (``peer``)."""
        frame = _peer_frame(user_id, serve)
        peers = self._in_room.setdefault(room_id, {})
        out.sends.extend((c, frame) for c in peers)
        self._peers[conn] = peers[conn] = _Peer(room_id, user_id, serve)

    def leave(self, conn: ConnId, out: HostOutput) -> None:
        """``conn`` is gone: each transfer it took part in is cut, the other side told."""
        peer = self._peers.get(conn)
        if peer is None:
            return
        for transfer in [t for t in self._running.values() if conn in (t.holder, t.requester)]:
            self._cut(transfer, f"{peer.user_id} disconnected", out, tell=conn)
        del self._peers[conn]
        peers = self._in_room[peer.room_id]
        del peers[conn]
        if not peers:
            del self._in_room[peer.room_id]

    def forget(self, conn: ConnId) -> None:
        """``conn``'s room has closed: forget its transfers, telling nobody (every member's
        connection is closing after the room's last event, which nothing may follow)."""
        self.leave(conn, HostOutput())

    def receive(
        self, conn: ConnId, message: tm.MemberTransferMessage, room: Room, out: HostOutput
    ) -> Refusal | None:
        """Handle a transfer message from ``conn``, a member of ``room`` that joined with
        protocol 2."""
        peer = self._peers.get(conn)
        if peer is None:
            return _NOT_JOINED
        match message:
            case tm.Want():
                return self._want(conn, peer, message, room, out)
            case tm.Ack(transfer=number, offset=offset):
                return self._ack(conn, number, offset, out)
            case tm.End(transfer=number):
                return self._end(conn, number, out)
            case tm.Unheld(transfer=number, reason=reason):
                why = f"{peer.user_id} cannot serve it" + (f": {reason}" if reason else "")
                return self._stop(conn, number, why, out, holder_only=True)
            case tm.Cancel(transfer=number, reason=reason):
                why = f"{peer.user_id} cancelled it" + (f": {reason}" if reason else "")
                return self._stop(conn, number, why, out, holder_only=False)
            case _:
                assert_never(message)

    def data(self, conn: ConnId, frame: bytes, out: HostOutput) -> Refusal | None:
        """Relay a data frame from ``conn`` to its transfer's requester, after every check
        (the module docstring); only the 13 bytes of its header are read."""
        if conn not in self._peers:
            return _NOT_JOINED
        try:
            number, offset, size = pr.data_header(frame)
        except pr.MessageError as error:
            return error.code, error.reason
        transfer = self._own(conn, number, out, holder=True)
        if not isinstance(transfer, Transfer):
            return transfer
        refusal: Refusal | None = None
        if offset != transfer.sent:
            why = f"transfer {number}: a frame at offset {offset}, the next byte is {transfer.sent}"
            refusal = "bad-offset", why
        elif offset + size > transfer.bound:
            bound = transfer.bound
            why = f"transfer {number}: {size} bytes at {offset} end beyond its bound of {bound}"
            refusal = "too-large", why
        elif offset + size - transfer.acked > tm.TRANSFER_WINDOW_BYTES:
            window, acked = tm.TRANSFER_WINDOW_BYTES, transfer.acked
            why = f"transfer {number}: bytes up to {offset + size}, acked {acked}, window {window}"
            refusal = "window-exceeded", why
        if refusal is not None:
            self._cut(transfer, refusal[1], out)
            return refusal
        transfer.sent = offset + size
        out.sends.append((transfer.requester, frame))
        return None

    # -- the messages -----------------------------------------------------------------------

    def _want(
        self, conn: ConnId, peer: _Peer, want: tm.Want, room: Room, out: HostOutput
    ) -> Refusal | None:
        key, form = want.piece, want.form
        assert room.config is not None  # a joined member's room is open
        pinned = room.config.content.get(key)
        if pinned is None or key not in room.members[peer.user_id].pieces:
            return "not-in-room", f"{key!r} is not a piece of room {room.room_id!r}"
        bound = form_bound(pinned, form)
        if bound is None:
            return "bad-form", f"{key!r} is not pinned as {form}: it cannot be sent so"
        if want.offset > bound:
            return "out-of-range", f"{key!r} as {form}: offset {want.offset} is beyond {bound}"
        replaced = self._running.get(peer.wants.get(key, 0))
        if replaced is not None:
            self._cut(replaced, f"{peer.user_id} asked for {key} again", out, tell=conn)
        holder = self._holder(conn, peer, want, room)
        if isinstance(holder, str):
            out.sends.append((conn, pr.encode(tm.Unavailable(piece=key, form=form, reason=holder))))
            return None
        number = self._new_id()
        server = self._peers[holder]
        start = want.offset
        self._running[number] = Transfer(number, key, form, conn, holder, bound, start, start)
        server.uploads.add(number)
        peer.wants[key] = number
        common = {"transfer": number, "piece": key, "form": form, "offset": want.offset}
        out.sends.append((conn, pr.encode(tm.Sending(**common, holder=server.user_id))))
        out.sends.append((holder, pr.encode(tm.Serve(**common, requester=peer.user_id))))
        return None

    def _holder(self, conn: ConnId, peer: _Peer, want: tm.Want, room: Room) -> ConnId | str:
        """The holder chosen for ``want`` (see the module docstring), or why there is none."""
        holding = [
            (c, p)
            for c, p in self._in_room[peer.room_id].items()
            if p.serve
            and c != conn
            and p.user_id not in want.avoid
            and room.piece_state(p.user_id, want.piece).status == "finished"
        ]
        free = [(len(p.uploads), p.served, p.user_id, c) for c, p in holding]
        free = [choice for choice in free if choice[0] < tm.MAX_UPLOADS_PER_MEMBER]
        if free:
            return min(free)[3]
        if holding:
            busy = ", ".join(sorted(p.user_id for _, p in holding))
            most = tm.MAX_UPLOADS_PER_MEMBER
            return ev.clip(f"every member serving {want.piece} ({busy}) runs {most} uploads")
        avoided = f" (but {', '.join(want.avoid)})" if want.avoid else ""
        return ev.clip(f"no member connected that serves holds {want.piece}{avoided}")

    def _ack(self, conn: ConnId, number: int, offset: int, out: HostOutput) -> Refusal | None:
        transfer = self._own(conn, number, out, holder=False)
        if not isinstance(transfer, Transfer):
            return transfer
        if not transfer.acked <= offset <= transfer.sent:
            why = f"transfer {number}: ack {offset} outside {transfer.acked}..{transfer.sent}"
            self._cut(transfer, why, out)
            return "bad-offset", why
        transfer.acked = offset
        out.sends.append((transfer.holder, pr.encode(tm.Ack(transfer=number, offset=offset))))
        return None

    def _end(self, conn: ConnId, number: int, out: HostOutput) -> Refusal | None:
        transfer = self._own(conn, number, out, holder=True)
        if not isinstance(transfer, Transfer):
            return transfer
        self._close(transfer)
        self._peers[conn].served += 1
        out.sends.append((transfer.requester, pr.encode(tm.End(transfer=number))))
        return None

    def _stop(
        self, conn: ConnId, number: int, why: str, out: HostOutput, *, holder_only: bool
    ) -> Refusal | None:
        transfer = self._own(conn, number, out, holder=True if holder_only else None)
        if not isinstance(transfer, Transfer):
            return transfer
        self._cut(transfer, why, out, tell=conn)
        return None

    # -- bookkeeping --------------------------------------------------------------------------

    def _own(
        self, conn: ConnId, number: int, out: HostOutput, *, holder: bool | None
    ) -> Transfer | Refusal | None:
        """The running transfer ``number`` if ``conn`` is its holder (``holder``), its
        requester (not ``holder``) or either (None); None when it was closed a moment ago (drop
        the message); else the refusal (and the transfer is cut when ``conn`` is its other
        side: a member that broke the rules of its own transfer)."""
        transfer = self._running.get(number)
        if transfer is None:
            if number in self._peers[conn].closed:
                return None
            return "bad-transfer", f"no transfer {number} is running"
        sides: tuple[ConnId, ...]
        if holder is None:
            sides, role = (transfer.holder, transfer.requester), "holder or requester"
        elif holder:
            sides, role = (transfer.holder,), "holder"
        else:
            sides, role = (transfer.requester,), "requester"
        if conn not in sides:
            why = f"transfer {number}: this connection is not its {role}"
            if conn in (transfer.holder, transfer.requester):
                self._cut(transfer, why, out)
            return "bad-transfer", why
        return transfer

    def _cut(
        self, transfer: Transfer, reason: str, out: HostOutput, tell: ConnId | None = None
    ) -> None:
        """End ``transfer`` early: tell both sides, or only the one that is not ``tell``'s."""
        self._close(transfer)
        frame = pr.encode(tm.Cut(transfer=transfer.id, reason=ev.clip(reason)))
        for side in (transfer.requester, transfer.holder):
            if side != tell:
                out.sends.append((side, frame))

    def _close(self, transfer: Transfer) -> None:
        del self._running[transfer.id]
        holder, requester = self._peers[transfer.holder], self._peers[transfer.requester]
        holder.uploads.discard(transfer.id)
        if requester.wants.get(transfer.piece) == transfer.id:
            del requester.wants[transfer.piece]
        holder.closed.append(transfer.id)
        requester.closed.append(transfer.id)

    def _new_id(self) -> int:
        """The next transfer id (1 .. 2**32 - 1), skipping any still running after a wrap."""
        while True:
            self._last_id = self._last_id % tm.MAX_TRANSFER_ID + 1
            if self._last_id not in self._running:
                return self._last_id
