"""The room host as a sans-IO state machine: bytes in, bytes to send and events to record out.

A :class:`HostProtocol` hosts any number of rooms. The shell (a transport plus the event logs)
calls :meth:`~HostProtocol.connect` when a peer connects (with a fresh random nonce: randomness
enters as data), :meth:`~HostProtocol.receive` with each frame and the current time, and
:meth:`~HostProtocol.disconnect` when the peer goes. Each call returns a :class:`HostOutput`:
the caller must first append ``output.events`` to each room's log (they are already applied to
the room's state), then send ``output.sends`` in order, then close ``output.closes``; and report
``output.diagnostics`` (refusals of peers that have not proved who they are) in its own
diagnostics (logging, counters), never in a room's log.

A host that holds only the last ``held_events`` of each room in memory (``matchlock serve``
does) defers a welcome reaching further back: the output carries a
:class:`~matchlock.core.hosted.Backfill`, the shell reads those events from the room's log once it
holds them and hands them to :meth:`~HostProtocol.backfilled`, which welcomes the member as the
answer would have.

The join flow: ``hello`` (a room config every expected user signed, a user id) -> ``challenge``
(the nonce) -> ``answer`` (the user's Ed25519 signature over room id, user id and nonce) ->
``welcome`` (every room event the user lacks) and ``member_joined`` to everyone. Nothing about a
room is created or recorded before an expected user has proved who they are: a room nobody had
opened is opened (``room_opened``) by the first valid answer, and every check the hello made is
made again at the answer (the room may have changed in between). A member that already said
goodbye, or any member of a room that has closed or aborted, is welcomed *read-only*: it gets
the events it lacks (ending with the close when the room has closed), is relayed what follows,
and nothing it sends is recorded; so a member that missed the end of its room (the host crashed
before sending it) still finishes. Then each ``report`` about one of the member's pieces becomes
a room event relayed to every member; the host adds ``member_done``, ``room_all_done`` and
``room_closed`` when they become true.

Anything refused is answered with ``refused`` (code, reason); the room's state does not change.
Refusals of a joined member are recorded as ``member_refused`` (at most
:data:`MAX_RECORDED_REFUSALS` per member, and never after the room has ended); refusals before
the answer proved who the peer is are only diagnostics. Refusals during the join, malformed or
oversized messages, and more than :data:`MAX_REFUSALS` on one connection close it. Each member
may add at most its share of :data:`MAX_HISTORY_BYTES` and :data:`MAX_HISTORY_EVENTS` to a room's
history (reports past it are refused ``history-full``), so a room's memory and its welcome stay
bounded. What a room it does not hold yet must be before it is opened is
:mod:`matchlock.core.admission`'s to say; what it keeps of each room,
:mod:`matchlock.core.hosted`'s.

Pure core: no sockets, no clock, no randomness, no files.
"""

from __future__ import annotations

import base64
import binascii
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from matchlock.core import events as ev
from matchlock.core import following
from matchlock.core import protocol as pr
from matchlock.core import transfer_messages as tm
from matchlock.core.admission import MAX_PIECES, MAX_USERS, Admission
from matchlock.core.config import RoomConfig
from matchlock.core.errors import IllegalEventError, InputError
from matchlock.core.hosted import (
    HELD_EVENTS,
    MAX_HISTORY_BYTES,
    MAX_HISTORY_EVENTS,
    Backfill,
    ConnId,
    Decoded,
    Diagnostic,
    HostedRoom,
    HostOutput,
    Recorded,
    Share,
    event_json,
    restamped,
    welcome_frame,
)
from matchlock.core.machines import MemberStatus, RoomStatus
from matchlock.core.reports import stamped_progress
from matchlock.core.room import next_due
from matchlock.core.signing import public_key_from_b64, signature_verifies
from matchlock.core.transfers import Transfers

__all__ = [
    "HELD_EVENTS",
    "MAX_HISTORY_BYTES",
    "MAX_HISTORY_EVENTS",
    "MAX_PIECES",
    "MAX_RECORDED_REFUSALS",
    "MAX_REFUSALS",
    "MAX_USERS",
    "PLANTABLE_BUGS",
    "Backfill",
    "ConnId",
    "Diagnostic",
    "HostOutput",
    "HostProtocol",
    "Phase",
    "Recorded",
]

MAX_REFUSALS = 20
"""Refused messages a connection may send before it is closed."""

MAX_RECORDED_REFUSALS = 100
"""Refusals of one member recorded in a room's log over the room's life; later ones are only
diagnostics (the member is still told, and still closed after :data:`MAX_REFUSALS`)."""

PLANTABLE_BUGS = frozenset({"accept-any-answer", "skip-reporter-relay"})
"""Bugs a test can plant (``planted_bugs=``) to prove the simulation finds such bugs: never in
production. ``accept-any-answer`` skips the check of a joining user's signature;
``skip-reporter-relay`` does not relay an accepted report back to the member who sent it."""


class Phase(StrEnum):
    """Where a connection is in the join: ``new`` -> ``challenged`` (after its hello) ->
    ``joined`` (proved, a member), or ``listening`` (proved, welcomed read-only: after its
    goodbye, or in a room that has ended)."""

    NEW = "new"
    CHALLENGED = "challenged"
    JOINED = "joined"
    LISTENING = "listening"
    WELCOMING = "welcoming"  # proved; its welcome waits for older events read from the log


@dataclass
class _Conn:
    nonce: str
    phase: Phase = Phase.NEW
    room_id: str = ""
    user_id: str = ""
    since: int = 0
    refusals: int = 0
    config: RoomConfig | None = None  # the hello's config, until the answer
    admitted: bool = False  # that config passed the admission at the hello (no room was open)
    welcomed: int = 0  # the room's events when its welcome was made (-1: a rebase's)
    protocol: int = 1
    serve: bool = False  # said protocol 2 and serve: a holder the transfers may choose



class HostProtocol:
    """Hosts rooms. See the module docstring for the calling sequence."""

    def __init__(
        self,
        max_message_bytes: int = pr.MAX_MESSAGE_BYTES,
        planted_bugs: frozenset[str] = frozenset(),
        max_users: int = MAX_USERS,
        max_pieces: int = MAX_PIECES,
        held_events: int | None = None,
    ) -> None:
        unknown = planted_bugs - PLANTABLE_BUGS
        if unknown:
            raise ValueError(f"unknown planted bugs: {sorted(unknown)}")
        self.max_message_bytes = max_message_bytes
        self.held_events = held_events
        """Events of each room held in memory (None: all); a welcome from further back asks
        the shell to read the log (``HostOutput.backfills``, then :meth:`backfilled`)."""
        self.planted_bugs = planted_bugs
        self.admission = Admission(max_users, max_pieces)
        self.rooms: dict[str, HostedRoom] = {}
        self.quarantined: dict[str, str] = {}
        self.refusals: Counter[str] = Counter()
        """Every refusal so far, by code (recorded in a room's log or not)."""
        self._conns: dict[ConnId, _Conn] = {}
        self.transfers = Transfers()
        """Peer transfers between members of protocol 2 (:mod:`matchlock.core.transfers`)."""

    # -- the shell's calls ------------------------------------------------------------------

    def restore(self, events: Iterable[ev.Event], at: float) -> tuple[str, HostOutput]:
        """Rebuild a room from its log after a restart; returns its id and what to record.
        Members the log shows connected lost their connection with the old host: a
        ``member_disconnected`` is recorded for each. A room whose every member said goodbye
        is closed (the crash came between the last goodbye and the close)."""
        hosted = HostedRoom(self.held_events)
        out = HostOutput()
        for event in events:
            hosted.record(event, out)
        if hosted.room.kind != "room":
            raise InputError("the log does not hold a room")
        out = HostOutput()
        self.rooms[hosted.room.room_id] = hosted
        for user, member in hosted.room.members.items():
            if member.status in (MemberStatus.CONNECTED, MemberStatus.DONE):
                hosted.record(
                    ev.MemberDisconnected(at=at, user_id=user, reason="host restarted"), out
                )
        while (due := next_due(hosted.room, "", at)) is not None:
            hosted.record(due, out)
        return hosted.room.room_id, out

    def quarantine(self, room_id: str, reason: str) -> None:
        """Refuse every join to ``room_id`` (code ``quarantined``, with ``reason``): its log is
        damaged, so the room can be neither rebuilt nor opened afresh."""
        self.quarantined[room_id] = reason

    def joined(self, conn: ConnId) -> bool:
        """Whether ``conn`` has proved who it is and joined its room (the shell applies the
        handshake deadline until it has, the idle timeout after)."""
        state = self._conns.get(conn)
        return state is not None and state.phase in (Phase.JOINED, Phase.LISTENING)

    def everyone_told(self, room_id: str) -> bool:
        """Whether room ``room_id`` has ended and every member was sent its end (on its
        connection as it ended, or in a read-only welcome since): a host that is also a player
        (``join --host``) keeps serving until then."""
        hosted = self.rooms.get(room_id)
        return (
            hosted is not None
            and hosted.ended
            and hosted.told >= set(hosted.room.members)
        )

    def connect(self, conn: ConnId, nonce: bytes) -> None:
        """A peer connected; ``nonce`` must be fresh random bytes (16 or more)."""
        self._conns[conn] = _Conn(nonce=nonce.hex())

    def receive(self, conn: ConnId, data: bytes, at: float) -> HostOutput:
        """Handle one frame from ``conn`` received at time ``at``. Never raises for anything a
        peer sends: every bad input becomes a refusal."""
        out = HostOutput()
        state = self._conns.get(conn)
        if state is None:
            return out
        joined = state.phase == Phase.JOINED and len(data) <= self.max_message_bytes
        progress = stamped_progress(data, at) if joined else None  # the frame most sent
        if not progress and pr.is_data_frame(data) and state.protocol >= 2 and self.joined(conn):
            refusal = self.transfers.data(conn, data, out)
            if refusal is not None:
                self._refuse(conn, state, at, out, code=refusal[0], reason=refusal[1])
            out.transfer_only = out.sends_only()
            return out
        try:
            message = progress or pr.decode_client_message(data, self.max_message_bytes)
        except pr.MessageError as error:
            self._refuse(conn, state, at, out, code=error.code, reason=error.reason, fatal=True)
            return out
        try:
            self._dispatch(conn, state, message, at, out)
        except InputError as error:  # a check this core missed: still a typed refusal
            self._refuse(conn, state, at, out, code="illegal", reason=str(error), fatal=True)
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
        if state is not None and state.phase == Phase.WELCOMING and state.room_id in self.rooms:
            self.rooms[state.room_id].welcoming.pop(state.user_id, None)
        if state is None or state.phase not in (Phase.JOINED, Phase.LISTENING):
            return out
        self.transfers.leave(conn, out)
        hosted = self.rooms[state.room_id]
        if hosted.members.get(state.user_id) == conn:
            del hosted.members[state.user_id]
            status = hosted.room.members[state.user_id].status
            present = status in (MemberStatus.CONNECTED, MemberStatus.DONE)
            if state.phase == Phase.JOINED and present:
                hosted.record(
                    ev.MemberDisconnected(at=at, user_id=state.user_id, reason="connection closed"),
                    out,
                )
        return out

    def abort(self, room_id: str, reason: str, at: float) -> HostOutput:
        """End a room that cannot complete (a deadline passed); every member is disconnected.
        A room that has already ended is left as it is."""
        out = HostOutput()
        hosted = self.rooms[room_id]
        if not hosted.ended:
            hosted.record(ev.RoomAborted(at=at, reason=ev.clip(reason)), out)
            self._close_room(hosted, out)
        return out

    # -- several nodes sharing a room's log (matchlock.core.following) -----------------------

    def follow(self, room_id: str, events: Sequence[ev.Event], at: float) -> HostOutput:
        """Apply ``events`` another node appended to room ``room_id``'s log (the whole log,
        for a room this node does not hold yet) and relay them to this node's members; the
        output records nothing. See :func:`matchlock.core.following.follow`."""
        return following.follow(self, room_id, events, at)

    def rebase(
        self, room_id: str, kept: int, theirs: Sequence[ev.Event], at: float
    ) -> tuple[HostOutput, HostOutput]:
        """The log refused this node's events after event ``kept``: it holds ``theirs`` there.
        Rebuild the room and decide this node's events again (recorded, or refused with the
        reason); the shell must drop its unsent frames about the room, send the first output
        (what members hear of ``theirs``), then do the second (what was decided again).
        See :func:`matchlock.core.following.rebase`."""
        return following.rebase(self, room_id, kept, theirs, at)

    def forget(self, room_id: str) -> list[ConnId]:
        """Stop serving room ``room_id`` on this node, recording nothing; the connections of
        its members and of every handshake for it under way, for the shell to close."""
        members = following.forget(self, room_id)
        joining = [conn for conn, state in self._conns.items() if state.room_id == room_id]
        for conn in joining:
            self._conns.pop(conn)
        return [*members, *joining]

    def room_named(self, data: bytes) -> str | None:
        """The room a hello frame asks for (None for any other frame, or a bad one), so that a
        node that may not hold the room yet loads it before the frame reaches :meth:`receive`."""
        try:
            message = pr.decode_client_message(data, self.max_message_bytes)
        except pr.MessageError:
            return None
        return message.room.room_id if isinstance(message, pr.Hello) else None

    def welcomed_at(self, conn: ConnId) -> int:
        """How many events ``conn``'s room held when its welcome was made."""
        state = self._conns.get(conn)
        return 0 if state is None else state.welcomed

    def welcome_again(self, conn: ConnId, out: HostOutput) -> bool:
        """Welcome ``conn`` again, with its room's events as this node now holds them, all
        of them in the log already (a rebase dropped its first welcome, unsent); False when
        its ``since`` is beyond them (the caller closes it)."""
        state = self._conns.get(conn)
        hosted = None if state is None else self.rooms.get(state.room_id)
        if state is None or hosted is None or not hosted.history:
            return False  # nothing opened the room yet: it joins again
        if state.since > len(hosted.history):
            return False
        state.welcomed = -1  # a welcome of logged events only: no rebase drops it again
        serving = self.transfers.serving(state.room_id) if state.protocol >= 2 else []
        welcome = pr.Welcome(since=state.since, events=hosted.history[state.since :],
                             protocol=state.protocol, serving=tuple(serving))  # fmt: skip
        out.sends.append((conn, pr.encode(welcome)))
        return True

    def drop_connection(self, conn: ConnId) -> None:
        """Forget ``conn`` without recording anything (the caller closes it)."""
        self._conns.pop(conn, None)
        self.transfers.forget(conn)

    def refuse_member(
        self, conn: ConnId, at: float, out: HostOutput, *, code: str, reason: str
    ) -> None:
        """Refuse something the member on ``conn`` sent earlier (a rebase decided it again)."""
        state = self._conns.get(conn)
        if state is not None:
            self._refuse(conn, state, at, out, code=code, reason=reason)

    def _dispatch(
        self, conn: ConnId, state: _Conn, message: Decoded, at: float, out: HostOutput
    ) -> None:
        match message:
            case ev.PieceProgress():  # a joined member's report, stamped (reports.stamped_progress)
                self._report(conn, state, message, at, out)
            case pr.Hello() if state.phase == Phase.NEW:
                self._hello(conn, state, message, at, out)
            case pr.Answer() if state.phase == Phase.CHALLENGED:
                self._answer(conn, state, message, at, out)
            case pr.Report() if state.phase == Phase.JOINED:
                self._report(conn, state, restamped(message.event, at), at, out)
            case pr.Goodbye() if state.phase == Phase.JOINED:
                self._goodbye(conn, state, at, out)
            case pr.Goodbye() if state.phase == Phase.LISTENING:
                pass  # said again by a member whose goodbye the host has: nothing to do
            case pr.Report() if state.phase == Phase.LISTENING:
                why = f"{state.user_id!r} is welcomed read-only: its room or its part has ended"
                self._refuse(conn, state, at, out, code="read-only", reason=why)
            case tm.Want() | tm.Ack() | tm.End() | tm.Unheld() | tm.Cancel() if state.protocol < 2:
                why = f"{message.type!r} is a message of protocol 2; this connection said 1"
                self._refuse(conn, state, at, out, code="unknown-type", reason=why, fatal=True)
            case tm.Want() | tm.Ack() | tm.End() | tm.Unheld() | tm.Cancel() if self.joined(conn):
                room = self.rooms[state.room_id].room
                refusal = self.transfers.receive(conn, message, room, out)
                if refusal is not None:
                    self._refuse(conn, state, at, out, code=refusal[0], reason=refusal[1])
                out.transfer_only = out.sends_only()
            case _:
                why = f"{message.type!r} is not expected while {state.phase}"
                self._refuse(conn, state, at, out, code="out-of-order", reason=why, fatal=True)

    # -- the join -----------------------------------------------------------------------------

    def _hello(
        self, conn: ConnId, state: _Conn, hello: pr.Hello, at: float, out: HostOutput
    ) -> None:
        config = hello.room
        state.room_id, state.user_id, state.since = config.room_id, hello.user_id, hello.since
        state.protocol, state.serve = hello.protocol, hello.serve and hello.protocol >= 2
        if hello.protocol not in pr.SUPPORTED_PROTOCOLS:
            speaks = " and ".join(map(str, sorted(pr.SUPPORTED_PROTOCOLS)))
            why = f"protocol {hello.protocol} is not supported (this host speaks {speaks})"
            self._refuse(conn, state, at, out, code="protocol", reason=why, fatal=True)
            return
        refusal = self._join_refusal(config, state)
        if refusal is not None:
            self._refuse(conn, state, at, out, code=refusal[0], reason=refusal[1], fatal=True)
            return
        hosted = self.rooms.get(config.room_id)
        kept = None if hosted is None else hosted.room.config  # equal to config, checked above
        state.config = config if kept is None else kept  # so the answer's check is `is`
        state.admitted = kept is None
        state.phase = Phase.CHALLENGED
        out.sends.append((conn, pr.challenge_frame(state.nonce)))

    def _join_refusal(  # noqa: PLR0911 - one return per reason to refuse
        self, config: RoomConfig, state: _Conn, *, admitted: bool = False
    ) -> tuple[str, str] | None:
        """Why ``state.user_id`` may not join with ``config`` now, or None. Checked at the hello
        and again at the answer, which passes ``admitted`` when the hello's check passed the
        config through the admission: its verdict depends on that (frozen) config alone."""
        room_id, user = config.room_id, state.user_id
        if room_id in self.quarantined:
            return "quarantined", f"room {room_id!r} is quarantined: {self.quarantined[room_id]}"
        hosted = self.rooms.get(room_id)
        if hosted is None:
            refused = None if admitted else self.admission.refusal(config)
            if refused is not None:
                return refused
        elif hosted.room.config is not config and hosted.room.config != config:
            return "config-mismatch", f"room {room_id!r} is open with a different config"
        if user not in config.users:
            return "unknown-user", f"{user!r} is not expected in room {room_id!r}"
        if hosted is not None and (user in hosted.members or user in hosted.welcoming):
            return "already-connected", f"{user!r} is already connected"
        events = 0 if hosted is None else len(hosted.history)
        if state.since > events:
            return "bad-since", f"since {state.since} is beyond the room's {events} events"
        return None

    def _answer(
        self, conn: ConnId, state: _Conn, answer: pr.Answer, at: float, out: HostOutput
    ) -> None:
        config = state.config
        assert config is not None  # set by the hello that challenged
        # the room may have changed since the hello
        refusal = self._join_refusal(config, state, admitted=state.admitted)
        if refusal is not None:
            self._refuse(conn, state, at, out, code=refusal[0], reason=refusal[1], fatal=True)
            return
        public = config.users[state.user_id].public_key
        public_key_from_b64(public)  # a listed key that is none is refused here, as ever
        message = pr.challenge_bytes(state.room_id, state.user_id, state.nonce)
        try:
            verified = "accept-any-answer" in self.planted_bugs or signature_verifies(
                public, base64.b64decode(answer.signature, validate=True), message
            )
        except (binascii.Error, ValueError):
            verified = False
        if not verified:
            why = (
                f"the answer is not {state.user_id!r}'s signature over this connection's challenge"
            )
            self._refuse(conn, state, at, out, code="bad-answer", reason=why, fatal=True)
            return
        hosted = self.rooms.get(state.room_id)
        if hosted is None:  # the first proven member opens the room
            hosted = self.rooms[state.room_id] = HostedRoom(self.held_events)
            hosted.record(ev.RoomOpened(at=at, config=config), out)
        state.config = None
        if state.since < hosted.history.start:  # older events are only in the room's log
            self._backfill(conn, state, hosted, out)
            return
        self._welcome(conn, state, hosted, out, bodies=hosted.history.bodies(state.since), at=at)

    def backfilled(self, conn: ConnId, events: Sequence[ev.Event], at: float) -> HostOutput:
        """The events a :class:`~matchlock.core.hosted.Backfill` of ``conn`` asked for, read
        from the room's log (``since + 1`` to ``upto``): welcome it now. Nothing happens for a
        connection gone meanwhile."""
        out = HostOutput()
        state = self._conns.get(conn)
        if state is None or state.phase != Phase.WELCOMING:
            return out
        hosted = self.rooms.get(state.room_id)
        if hosted is None or hosted.welcoming.get(state.user_id) != conn:  # the room was let go
            self._conns.pop(conn, None)
            out.closes.append(conn)
            return out
        upto = state.since + len(events)
        if upto < hosted.history.start:  # more events went meanwhile than are held: again
            self._backfill(conn, state, hosted, out)
            return out
        del hosted.welcoming[state.user_id]
        bodies = [*map(event_json, events), *hosted.history.bodies(upto)]
        self._welcome(conn, state, hosted, out, bodies=bodies, at=at)
        return out

    def _backfill(self, conn: ConnId, state: _Conn, hosted: HostedRoom, out: HostOutput) -> None:
        state.phase = Phase.WELCOMING
        hosted.welcoming[state.user_id] = conn
        out.backfills.append(Backfill(conn, state.room_id, state.since, len(hosted.history)))

    def _welcome(
        self,
        conn: ConnId,
        state: _Conn,
        hosted: HostedRoom,
        out: HostOutput,
        *,
        bodies: list[bytes],
        at: float,
    ) -> None:
        """Welcome the proven member on ``conn`` with ``bodies`` (the JSON of every event after
        its ``since``), then make it a member (or a read-only listener)."""
        state.welcomed = len(hosted.history)
        serving = self.transfers.serving(state.room_id) if state.protocol >= 2 else []
        head = pr.welcome_head(state.since, state.protocol, serving)
        out.sends.append((conn, welcome_frame(head, bodies)))
        if hosted.ended:  # read-only, and nothing will follow: the history ends with the end
            hosted.told.add(state.user_id)
            out.closes.append(conn)
            self._conns.pop(conn, None)
            return
        hosted.members[state.user_id] = conn
        if state.protocol >= 2:
            self.transfers.join(conn, state.room_id, state.user_id, state.serve, out)
        if hosted.room.members[state.user_id].status == MemberStatus.GOODBYE:
            state.phase = Phase.LISTENING  # it will be relayed the rest, up to the close
            return
        state.phase = Phase.JOINED
        if hosted.room.members[state.user_id].status in (MemberStatus.CONNECTED, MemberStatus.DONE):
            why = "joined again through another host node"  # which may have died
            hosted.record(ev.MemberDisconnected(at=at, user_id=state.user_id, reason=why), out)
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
            why = f"{event.piece!r} is not a piece of this room"
            self._refuse(conn, state, at, out, code="unknown-piece", reason=why)
            return
        body = event_json(event)
        if hosted.over_share(state.user_id, event, len(body)):
            why = f"{state.user_id!r} has used its share of the room's history"
            self._refuse(conn, state, at, out, code="history-full", reason=why, counted=False)
            return
        skip = conn if "skip-reporter-relay" in self.planted_bugs else None
        try:
            hosted.record(event, out, skip, body)
        except IllegalEventError as error:
            self._refuse(conn, state, at, out, code="illegal", reason=str(error))
            return
        if event.type != "piece_progress":  # its piece stays in progress: nothing becomes due
            self._progress(hosted, state.user_id, at, out)

    def _progress(self, hosted: HostedRoom, user_id: str, at: float, out: HostOutput) -> None:
        """Record each state-triggered event now due; close the connections of a closed room."""
        while (due := next_due(hosted.room, user_id, at)) is not None:
            hosted.record(due, out)
        if hosted.room.status == RoomStatus.CLOSED:
            self._close_room(hosted, out)

    def _goodbye(self, conn: ConnId, state: _Conn, at: float, out: HostOutput) -> None:
        hosted = self.rooms[state.room_id]
        try:
            hosted.record(ev.MemberGoodbye(at=at, user_id=state.user_id), out)
        except IllegalEventError as error:
            self._refuse(conn, state, at, out, code="not-done", reason=str(error))
            return
        state.phase = Phase.LISTENING
        self._progress(hosted, state.user_id, at, out)

    def _close_room(self, hosted: HostedRoom, out: HostOutput) -> None:
        hosted.told.update(hosted.members)
        for conn in hosted.members.values():
            self.transfers.forget(conn)
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
        counted: bool = True,
    ) -> None:
        """Refuse what ``conn`` sent: tell it, record it if a member is to blame (otherwise a
        diagnostic), close it when ``fatal`` or past :data:`MAX_REFUSALS` (``counted``)."""
        self.refusals[code] += 1
        state.refusals += counted
        fatal = fatal or state.refusals > MAX_REFUSALS
        user = ev.clip(state.user_id or "(unknown)", ev.MAX_CLAIMED_ID_LENGTH)
        reason = ev.clip(reason)
        hosted = self.rooms.get(state.room_id)
        share = None if hosted is None else hosted.shares.setdefault(state.user_id, Share())
        if (
            state.phase == Phase.JOINED
            and counted
            and hosted is not None
            and share is not None
            and not hosted.ended
            and share.refusals < MAX_RECORDED_REFUSALS
        ):
            share.refusals += 1
            hosted.record(ev.MemberRefused(at=at, user_id=user, code=code, reason=reason), out)
        else:
            out.diagnostics.append(Diagnostic(state.room_id, user, code, reason))
        out.sends.append((conn, pr.encode(pr.Refused(code=code, reason=reason, fatal=fatal))))
        if fatal:
            gone = self.disconnect(conn, at)
            out.events += gone.events
            out.sends += gone.sends
            out.closes.append(conn)
