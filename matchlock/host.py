"""The room host as a sans-IO state machine: bytes in, bytes to send and events to record out.

A :class:`HostProtocol` hosts any number of rooms. The shell (a transport plus the event logs)
calls :meth:`~HostProtocol.connect` when a peer connects (with a fresh random nonce: randomness
enters as data), :meth:`~HostProtocol.receive` with each frame and the current time, and
:meth:`~HostProtocol.disconnect` when the peer goes. Each call returns a :class:`HostOutput`:
the caller must first append ``output.events`` to each room's log (they are already applied to
the room's state), then send ``output.sends`` in order, then close ``output.closes``.

The join flow: ``hello`` (a room config every expected user signed, a user id) -> ``challenge``
(the nonce) -> ``answer`` (the user's Ed25519 signature over room id, user id and nonce) ->
``welcome`` (every room event the user lacks) and ``member_joined`` to everyone. Then each
``report`` about one of the member's pieces becomes a room event relayed to every member; the
host adds ``member_done``, ``room_all_done`` and ``room_closed`` when they become true.

Anything refused is answered with ``refused`` (code, reason) and recorded as ``member_refused``
when the room is known; the room's state does not change. Refusals during the join, malformed or
oversized messages, and too many refusals close the connection.

Pure core: no sockets, no clock, no randomness, no files.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from cryptography.exceptions import InvalidSignature

from matchlock import events as ev
from matchlock import protocol as pr
from matchlock.errors import IllegalEventError, InputError, SignatureError
from matchlock.room import Room
from matchlock.signing import public_key_from_b64, verify_room

__all__ = ["MAX_REFUSALS", "PLANTABLE_BUGS", "ConnId", "HostOutput", "HostProtocol", "Recorded"]

ConnId = int
"""The shell's name for one connection."""

MAX_REFUSALS = 20
"""Refused messages a member may send before its connection is closed."""

PLANTABLE_BUGS = frozenset({"accept-any-answer", "skip-reporter-relay"})
"""Bugs a test can plant (``planted_bugs=``) to prove the simulation finds such bugs: never in
production. ``accept-any-answer`` skips the check of a joining user's signature;
``skip-reporter-relay`` does not relay an accepted report back to the member who sent it."""


class Recorded(NamedTuple):
    """An event to record in room ``room_id``'s log, with its JSON (the bytes it was relayed
    with: the log line embeds the same bytes)."""

    room_id: str
    event: ev.Event
    body: bytes


@dataclass
class HostOutput:
    """What the shell must do, in this order: record ``events`` (:class:`Recorded`), send
    ``sends`` (connection, bytes), close ``closes``."""

    events: list[Recorded] = field(default_factory=list)
    sends: list[tuple[ConnId, bytes]] = field(default_factory=list)
    closes: list[ConnId] = field(default_factory=list)


@dataclass
class _Conn:
    nonce: str
    phase: str = "new"  # new -> challenged -> joined
    room_id: str = ""
    user_id: str = ""
    since: int = 0
    refusals: int = 0


class _HostedRoom:
    """One room: its state, its history (encoded events, for welcomes) and who is connected."""

    def __init__(self) -> None:
        self.room = Room()
        self.history: list[ev.Event] = []
        self.members: dict[str, ConnId] = {}

    def record(self, event: ev.Event, out: HostOutput, skip: ConnId | None = None) -> None:
        """Apply ``event`` (raises if illegal), then record it and relay it to every member
        (but ``skip``, which only a planted bug passes)."""
        self.room.apply(event)
        self.history.append(event)
        body = ev.EventAdapter.dump_json(event)
        out.events.append(Recorded(self.room.room_id, event, body))
        frame = pr.relay_frame(len(self.history), body)
        out.sends.extend((conn, frame) for conn in self.members.values() if conn != skip)


class HostProtocol:
    """Hosts rooms. See the module docstring for the calling sequence."""

    def __init__(
        self,
        max_message_bytes: int = pr.MAX_MESSAGE_BYTES,
        planted_bugs: frozenset[str] = frozenset(),
    ) -> None:
        unknown = planted_bugs - PLANTABLE_BUGS
        if unknown:
            raise ValueError(f"unknown planted bugs: {sorted(unknown)}")
        self.max_message_bytes = max_message_bytes
        self.planted_bugs = planted_bugs
        self.rooms: dict[str, _HostedRoom] = {}
        self.quarantined: dict[str, str] = {}
        self._conns: dict[ConnId, _Conn] = {}

    # -- the shell's calls ------------------------------------------------------------------

    def restore(self, events: Iterable[ev.Event], at: float) -> tuple[str, HostOutput]:
        """Rebuild a room from its log after a restart; returns its id and what to record.
        Members the log shows connected lost their connection with the old host: a
        ``member_disconnected`` is recorded for each."""
        hosted = _HostedRoom()
        for event in events:
            hosted.room.apply(event)
            hosted.history.append(event)
        out = HostOutput()
        if hosted.room.kind != "room":
            raise InputError("the log does not hold a room")
        self.rooms[hosted.room.room_id] = hosted
        for user, member in hosted.room.members.items():
            if member.status in ("connected", "done"):
                hosted.record(
                    ev.MemberDisconnected(at=at, user_id=user, reason="host restarted"), out
                )
        return hosted.room.room_id, out

    def quarantine(self, room_id: str, reason: str) -> None:
        """Refuse every join to ``room_id`` (code ``quarantined``, with ``reason``): its log is
        damaged, so the room can be neither rebuilt nor opened afresh."""
        self.quarantined[room_id] = reason

    def joined(self, conn: ConnId) -> bool:
        """Whether ``conn`` has proved who it is and joined its room (the shell applies the
        handshake deadline until it has, the idle timeout after)."""
        state = self._conns.get(conn)
        return state is not None and state.phase == "joined"

    def connect(self, conn: ConnId, nonce: bytes) -> None:
        """A peer connected; ``nonce`` must be fresh random bytes (16 or more)."""
        self._conns[conn] = _Conn(nonce=nonce.hex())

    def receive(self, conn: ConnId, data: bytes, at: float) -> HostOutput:
        """Handle one frame from ``conn`` received at time ``at``."""
        out = HostOutput()
        state = self._conns.get(conn)
        if state is None:
            return out
        try:
            message = pr.decode_client_message(data, self.max_message_bytes)
        except pr.MessageError as error:
            self._refuse(conn, state, at, out, code=error.code, reason=error.reason, fatal=True)
            return out
        match message:
            case pr.Hello() if state.phase == "new":
                self._hello(conn, state, message, at, out)
            case pr.Answer() if state.phase == "challenged":
                self._answer(conn, state, message, at, out)
            case pr.Report() if state.phase == "joined":
                self._report(conn, state, message.event, at, out)
            case pr.Goodbye() if state.phase == "joined":
                self._goodbye(conn, state, at, out)
            case _:
                why = f"{message.type!r} is not expected while {state.phase}"
                self._refuse(conn, state, at, out, code="out-of-order", reason=why, fatal=True)
        return out

    def frame_too_large(self, conn: ConnId, limit: int, at: float) -> HostOutput:
        """The transport read a frame from ``conn`` over ``limit`` bytes (and no more): refused
        as ``too-large``, as if the frame had reached :meth:`receive`."""
        out = HostOutput()
        state = self._conns.get(conn)
        if state is not None:
            why = f"a frame over the transport's {limit}-byte limit"
            self._refuse(conn, state, at, out, code="too-large", reason=why, fatal=True)
        return out

    def disconnect(self, conn: ConnId, at: float) -> HostOutput:
        """``conn`` is gone (closed by either side)."""
        out = HostOutput()
        state = self._conns.pop(conn, None)
        if state is None or state.phase != "joined":
            return out
        hosted = self.rooms[state.room_id]
        if hosted.members.get(state.user_id) == conn:
            del hosted.members[state.user_id]
            if hosted.room.members[state.user_id].status in ("connected", "done"):
                hosted.record(
                    ev.MemberDisconnected(at=at, user_id=state.user_id, reason="connection closed"),
                    out,
                )
        return out

    def abort(self, room_id: str, reason: str, at: float) -> HostOutput:
        """End a room that cannot complete (a deadline passed); every member is disconnected."""
        out = HostOutput()
        hosted = self.rooms[room_id]
        hosted.record(ev.RoomAborted(at=at, reason=reason), out)
        self._close_room(hosted, out)
        return out

    # -- the join -----------------------------------------------------------------------------

    def _hello(
        self, conn: ConnId, state: _Conn, hello: pr.Hello, at: float, out: HostOutput
    ) -> None:
        config = hello.room
        state.room_id, state.user_id, state.since = config.room_id, hello.user_id, hello.since
        if hello.protocol != pr.PROTOCOL_VERSION:
            speaks = pr.PROTOCOL_VERSION
            why = f"protocol {hello.protocol} is not supported (this host speaks {speaks})"
            self._refuse(conn, state, at, out, code="protocol", reason=why, fatal=True)
            return
        if config.room_id in self.quarantined:
            why = f"room {config.room_id!r} is quarantined: {self.quarantined[config.room_id]}"
            self._refuse(conn, state, at, out, code="quarantined", reason=why, fatal=True)
            return
        hosted = self.rooms.get(config.room_id)
        if hosted is None:
            try:
                verify_room(config)
            except SignatureError as error:
                self._refuse(
                    conn, state, at, out, code="unsigned-config", reason=str(error), fatal=True
                )
                return
            hosted = self.rooms[config.room_id] = _HostedRoom()
            hosted.record(ev.RoomOpened(at=at, config=config), out)
        refusal = self._join_refusal(hosted, hello)
        if refusal is not None:
            self._refuse(conn, state, at, out, code=refusal[0], reason=refusal[1], fatal=True)
            return
        state.phase = "challenged"
        out.sends.append((conn, pr.encode(pr.Challenge(nonce=state.nonce))))

    def _join_refusal(  # noqa: PLR0911 - one return per reason to refuse
        self, hosted: _HostedRoom, hello: pr.Hello
    ) -> tuple[str, str] | None:
        room = hosted.room
        if room.config != hello.room:
            return "config-mismatch", f"room {room.room_id!r} is open with a different config"
        if hello.user_id not in room.members:
            return "unknown-user", f"{hello.user_id!r} is not expected in room {room.room_id!r}"
        if hello.user_id in hosted.members:
            return "already-connected", f"{hello.user_id!r} is already connected"
        if room.status in ("closed", "aborted"):
            return "room-ended", f"room {room.room_id!r} has {room.status}"
        if room.members[hello.user_id].status == "goodbye":
            return "room-ended", f"{hello.user_id!r} already said goodbye"
        if hello.since > len(hosted.history):
            return (
                "bad-since",
                f"since {hello.since} is beyond the room's {len(hosted.history)} events",
            )
        return None

    def _answer(
        self, conn: ConnId, state: _Conn, answer: pr.Answer, at: float, out: HostOutput
    ) -> None:
        hosted = self.rooms[state.room_id]
        if state.user_id in hosted.members:  # someone else joined as this user meanwhile
            self._refuse(
                conn,
                state,
                at,
                out,
                code="already-connected",
                reason=f"{state.user_id!r} is already connected",
                fatal=True,
            )
            return
        assert hosted.room.config is not None  # the room is open
        public = public_key_from_b64(hosted.room.config.users[state.user_id].public_key)
        message = pr.challenge_bytes(state.room_id, state.user_id, state.nonce)
        try:
            if "accept-any-answer" not in self.planted_bugs:
                public.verify(base64.b64decode(answer.signature, validate=True), message)
        except (InvalidSignature, binascii.Error, ValueError):
            why = (
                f"the answer is not {state.user_id!r}'s signature over this connection's challenge"
            )
            self._refuse(conn, state, at, out, code="bad-answer", reason=why, fatal=True)
            return
        state.phase = "joined"
        out.sends.append(
            (conn, pr.encode(pr.Welcome(since=state.since, events=hosted.history[state.since :])))
        )
        hosted.members[state.user_id] = conn
        hosted.record(ev.MemberJoined(at=at, user_id=state.user_id), out)
        self._progress(hosted, state.user_id, at, out)

    # -- the room -----------------------------------------------------------------------------

    def _report(
        self, conn: ConnId, state: _Conn, event: pr.ReportEvent, at: float, out: HostOutput
    ) -> None:
        hosted = self.rooms[state.room_id]
        if event.user_id != state.user_id:
            why = f"{state.user_id!r} reported about {event.user_id!r}"
            self._refuse(conn, state, at, out, code="not-yours", reason=why)
            return
        if event.piece not in hosted.room.members[state.user_id].pieces:
            self._refuse(
                conn,
                state,
                at,
                out,
                code="unknown-piece",
                reason=f"{event.piece!r} is not a piece of this room",
            )
            return
        skip = conn if "skip-reporter-relay" in self.planted_bugs else None
        try:
            hosted.record(event.model_copy(update={"at": at}), out, skip)
        except IllegalEventError as error:
            self._refuse(conn, state, at, out, code="illegal", reason=str(error))
            return
        self._progress(hosted, state.user_id, at, out)

    def _progress(self, hosted: _HostedRoom, user_id: str, at: float, out: HostOutput) -> None:
        """Record what has become true: this member done, then everyone done."""
        room = hosted.room
        member = room.members[user_id]
        if member.status == "connected" and all(
            p.status == "finished" for p in member.pieces.values()
        ):
            hosted.record(ev.MemberDone(at=at, user_id=user_id), out)
        if room.status == "open" and all(m.status == "done" for m in room.members.values()):
            hosted.record(ev.RoomAllDone(at=at), out)

    def _goodbye(self, conn: ConnId, state: _Conn, at: float, out: HostOutput) -> None:
        hosted = self.rooms[state.room_id]
        try:
            hosted.record(ev.MemberGoodbye(at=at, user_id=state.user_id), out)
        except IllegalEventError as error:
            self._refuse(conn, state, at, out, code="not-done", reason=str(error))
            return
        if all(m.status == "goodbye" for m in hosted.room.members.values()):
            hosted.record(ev.RoomClosed(at=at), out)
            self._close_room(hosted, out)

    def _close_room(self, hosted: _HostedRoom, out: HostOutput) -> None:
        for conn in hosted.members.values():
            out.closes.append(conn)
            self._conns.pop(conn, None)
        hosted.members.clear()

    def _refuse(
        self,
        conn: ConnId,
        state: _Conn,
        at: float,
        out: HostOutput,
        *,
        code: str,
        reason: str,
        fatal: bool = False,
    ) -> None:
        state.refusals += 1
        fatal = fatal or state.refusals > MAX_REFUSALS
        hosted = self.rooms.get(state.room_id)
        if hosted is not None and hosted.room.kind == "room":
            claimed = state.user_id or "(unknown)"
            hosted.record(
                ev.MemberRefused(at=at, user_id=claimed[:256], code=code, reason=reason[:1024]), out
            )
        out.sends.append((conn, pr.encode(pr.Refused(code=code, reason=reason, fatal=fatal))))
        if fatal:
            gone = self.disconnect(conn, at)
            out.events += gone.events
            out.sends += gone.sends
            out.closes.append(conn)
