"""A room member as a sans-IO state machine: what to send, and the room as the host tells it.

The shell (see :mod:`matchlock.app.joining`) sends :meth:`ClientProtocol.hello`, feeds every frame
from the host to :meth:`ClientProtocol.receive`, sends what the returned :class:`ClientOutput` says
and records its ``events`` in the client's own log, and hands every piece event of the downloader
to :meth:`ClientProtocol.piece_event`, sending the frames it returns. The client answers the
challenge with its key (Ed25519 signing is deterministic: no randomness here), and says goodbye
on its own once the room is all done.

It keeps three views of this member's pieces apart:

- ``local``: the truth, what this member really has (fed by the downloader);
- ``room``: the host's view, a mirror built only from the host's events (the welcome, then
  each relayed event), so it converges to the host's state;
- the projection (:meth:`ClientProtocol.projected`): the host's view plus the reports sent on
  this connection that the host has neither relayed back nor refused yet. The host handles a
  member's frames in order and answers them in order, so the projection is the state the next
  report will meet when it arrives.

Every report is chosen to be legal in the projection, and moves it toward the local truth
(:func:`catch_up`): nothing when the host is already there or ahead (a restarted member that
finds a piece in its cache sends nothing for a piece the host counts as finished; a download
that starts again from zero says nothing until it passes what the host already heard). So a
correct member is never refused for its own catch-up, after a reconnect or a restart.

Peer transfers (protocol 2): the member says hello with protocol 2 and whether it serves;
an old host that refuses that hello (``protocol``, ``unknown-version`` or ``unknown-field``) is
greeted again, on the next connection, with protocol 1, and peers are never used with it.
:attr:`ClientProtocol.peers` is true once the welcome said protocol 2; then every transfer
message and data frame from the host is handed to the shell in :attr:`ClientOutput.transfers`,
in order (this core checks only their form: the shell checks what the bytes are), and
:meth:`ClientProtocol.want` and the other builders make the frames the shell sends back.
:meth:`ClientProtocol.holders` says who in the room holds a piece and serves, as far as this
member knows: the welcome lists the members connected that serve, and a ``peer`` message tells
of each member that joins after.

Pure core: no sockets, no clock, no randomness.
"""

from __future__ import annotations

import base64
import contextlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from matchlock.core import events as ev
from matchlock.core import protocol as pr
from matchlock.core import transfer_messages as tm
from matchlock.core.config import RoomConfig
from matchlock.core.errors import IllegalEventError, InputError, SignatureError, UsageError
from matchlock.core.machines import PIECE, MemberStatus, PieceStatus, RoomStatus
from matchlock.core.room import PieceState, Room
from matchlock.core.signing import signed_room_bytes

__all__ = [
    "OLD_HOST_REFUSALS",
    "RETRYABLE_REFUSALS",
    "ClientOutput",
    "ClientProtocol",
    "MemberPhase",
    "ProtocolError",
    "catch_up",
    "challenge_signature",
]

RETRYABLE_REFUSALS = frozenset({"already-connected"})
"""Fatal refusal codes that end only this connection: the member joins again after a delay
(the host has not yet noticed that this member's previous connection is gone)."""

OLD_HOST_REFUSALS = frozenset({"protocol", "unknown-version", "unknown-field"})
"""Fatal refusals of a protocol 2 hello that mean an older host: hello again with protocol 1
(a version 1 host refuses ``hello.serve`` as an unknown field, or the version itself)."""

HostTransfer = tm.Sending | tm.Unavailable | tm.Serve | tm.Ack | tm.End | tm.Cut
"""A transfer message from the host that the shell acts on."""

_TRIGGERS = {
    "piece_started": "start",
    "piece_progress": "progress",
    "resolvable_failed": "resolvable_failed",
    "folder_rejected": "reject_folder",
    "piece_finished": "finish",
    "piece_failed": "fail",
    "piece_retried": "retry",
}


_PIECE_EVENTS = (
    ev.PieceStarted,
    ev.PieceProgress,
    ev.ResolvableFailed,
    ev.FolderRejected,
    ev.PieceFinished,
    ev.PieceFailed,
    ev.PieceRetried,
)


def _sodium_sign() -> Callable[[bytes, bytes], bytes] | None:
    """libsodium's Ed25519 signing (message, 64-byte secret key -> signature + message), when
    PyNaCl (the speed extra) is installed."""
    try:
        from nacl.bindings import crypto_sign
    except ImportError:  # pragma: no cover - the test extra installs it
        return None
    return crypto_sign


_SODIUM_SIGN = _sodium_sign()

_SIGNATURE_BYTES = 64


def challenge_signature(key: Ed25519PrivateKey, message: bytes) -> bytes:
    """``key.sign(message)``, the same 64 bytes, in about two thirds of the time with PyNaCl
    installed: Ed25519 signatures are deterministic (RFC 8032, 5.1.6: the nonce is a hash of
    the key and the message), so libsodium, given the same seed and its public key (the
    secret key it signs with), makes exactly the signature OpenSSL makes."""
    if _SODIUM_SIGN is None:
        return key.sign(message)
    secret = key.private_bytes_raw() + key.public_key().public_bytes_raw()
    return _SODIUM_SIGN(message, secret)[:_SIGNATURE_BYTES]


class ProtocolError(InputError):
    """The host sent what a correct host never sends (out of order, a gap, an illegal event).
    ``events`` are the room events of the same frame accepted before the bad one: the shell
    records them too, so its log keeps holding what the mirror holds."""

    def __init__(self, message: str, events: Sequence[ev.Event] = ()) -> None:
        super().__init__(message)
        self.events = list(events)


class MemberPhase(StrEnum):
    """Where a member's connection is: ``new`` (not yet said hello) -> ``hello`` (waiting for
    the challenge) -> ``answered`` (waiting for the welcome) -> ``joined``; ``closed`` once the
    room has closed or the host refused it for good."""

    NEW = "new"
    HELLO = "hello"
    ANSWERED = "answered"
    JOINED = "joined"
    CLOSED = "closed"


@dataclass
class ClientOutput:
    """What the shell must do: record ``events`` (the room's, in order), send ``sends``; and
    what happened: ``joined`` (just welcomed), ``refused`` (the host refused something),
    ``retry`` (a fatal refusal that is worth joining again for: reconnect after a delay),
    ``closed`` (the room is closed: the connection ends), ``aborted`` (the room ended without
    completing: the host's reason; the connection ends, and no try again can complete it); and
    ``transfers``, the transfer messages and data chunks that arrived (protocol 2), in order,
    for the shell."""

    events: list[ev.Event] = field(default_factory=list)
    sends: list[bytes] = field(default_factory=list)
    transfers: list[HostTransfer | pr.DataChunk] = field(default_factory=list)
    joined: bool = False
    refused: pr.Refused | None = None
    retry: bool = False
    closed: bool = False
    aborted: str | None = None


class ClientProtocol:
    """One member's side of a room connection. ``known`` are room events already held (from
    this member's own log, after a restart or a reconnect): only later ones are asked for."""

    def __init__(
        self,
        config: RoomConfig,
        user_id: str,
        key: Ed25519PrivateKey,
        known: Sequence[ev.Event] = (),
        *,
        serve: bool = False,
    ) -> None:
        if user_id not in config.users:
            raise UsageError(f"{user_id!r} is not expected in room {config.room_id!r}")
        self.config = config
        self.user_id = user_id
        self._key = key
        self.room = Room()
        for event in known:
            self.room.apply(event)
        self.local = Room()
        """This member's own pieces as they really are (a download-kind room)."""
        sizes = {key: config.content[key].content_size for key in config.piece_keys()}
        self.local.apply(ev.DownloadOpened(at=0.0, user_id=user_id, sizes=sizes))
        self.phase: MemberPhase = MemberPhase.NEW
        self.goodbye_sent = False
        self._pending: deque[pr.ReportEvent | None] = deque()  # None: a goodbye
        self._projection: dict[str, PieceState] = {}
        self.serve = serve
        """Whether this member serves the pieces it holds (said in a protocol 2 hello)."""
        self.protocol = pr.PROTOCOL_VERSION
        """The version the next hello says: 1 for good once an old host refused 2."""
        self.peers = False
        """Whether this connection may use transfers: its welcome said protocol 2."""
        self._serving: set[str] = set()

    @property
    def seen(self) -> int:
        """How many room events this member holds."""
        return self.room.events

    def hello(self) -> bytes:
        """The first frame of a (re)connection."""
        self.phase = MemberPhase.HELLO
        # A goodbye sent on a lost connection may never have arrived: say it again if due.
        self.goodbye_sent = False
        self._pending.clear()  # what the old connection's host handled is in the welcome
        self._projection.clear()
        self.peers = False
        hello = pr.Hello(
            protocol=self.protocol,
            room=self.config,
            user_id=self.user_id,
            since=self.seen,
            serve=self.serve and self.protocol >= 2,
        )
        return pr.encode(hello)

    def receive(self, data: bytes) -> ClientOutput:
        """Handle one frame from the host; raises :class:`ProtocolError` if the host misbehaves
        (then hello again on a new connection)."""
        out = ClientOutput()
        try:
            if pr.is_data_frame(data) and self.peers and self.phase == MemberPhase.JOINED:
                out.transfers.append(pr.parse_data_frame(data))
                return out
            message = pr.decode_host_message(data)
        except pr.MessageError as error:
            raise ProtocolError(f"the host sent a bad message: {error.reason}") from None
        match message:
            case pr.Challenge(nonce=nonce) if self.phase == MemberPhase.HELLO:
                signed = challenge_signature(
                    self._key, pr.challenge_bytes(self.config.room_id, self.user_id, nonce)
                )
                out.sends.append(pr.answer_frame(base64.b64encode(signed).decode()))
                self.phase = MemberPhase.ANSWERED
            case pr.Welcome(since=since, events=events) if self.phase == MemberPhase.ANSWERED:
                if since != self.seen:
                    raise ProtocolError(
                        f"welcome starts after event {since}, this member holds {self.seen}"
                    )
                self.phase = MemberPhase.JOINED
                out.joined = True
                self.peers = self.protocol >= 2 and message.protocol >= 2
                self._serving = set(message.serving)
                self._apply(events, out)
                if self.phase == MemberPhase.JOINED:
                    out.sends[:0] = self._catch_up()
            case pr.Relay(seq=seq, event=event) if self.phase == MemberPhase.JOINED:
                if seq != self.seen + 1:
                    raise ProtocolError(f"event {seq} arrived after event {self.seen}")
                self._answered(event)
                self._apply([event], out)
            case pr.Refused() as refused:
                self._refused(refused, out)
            case tm.Peer(user_id=user, serve=serve) if self.peers:
                (self._serving.add if serve else self._serving.discard)(user)
            case (
                tm.Sending() | tm.Unavailable() | tm.Serve() | tm.Ack() | tm.End() | tm.Cut()
            ) if self.peers and self.phase == MemberPhase.JOINED:
                out.transfers.append(message)
            case _:
                raise ProtocolError(f"{message.type!r} is not expected while {self.phase}")
        return out

    def _apply(self, events: Sequence[ev.Event], out: ClientOutput) -> None:
        for event in events:
            try:
                if isinstance(event, ev.RoomOpened):
                    self._own_room(event.config)
                self.room.apply(event)
            except (IllegalEventError, SignatureError) as error:
                self.phase = MemberPhase.NEW
                why = f"the host sent an illegal event: {error}"
                raise ProtocolError(why, out.events) from None
            out.events.append(event)
        if self.room.status == RoomStatus.CLOSED:
            self.phase = MemberPhase.CLOSED
            out.closed = True
        elif self.room.status == RoomStatus.ABORTED:
            self.phase = MemberPhase.CLOSED
            reasons = [e.reason for e in events if isinstance(e, ev.RoomAborted)]
            out.aborted = reasons[-1] if reasons else "it had ended before"
        elif self._should_say_goodbye():
            self.goodbye_sent = True
            self._pending.append(None)
            out.sends.append(pr.encode(pr.Goodbye()))

    def _own_room(self, config: RoomConfig) -> None:
        """Raise :class:`IllegalEventError` unless the room the host opened is this member's:
        the same signed bytes (a room validly signed by the same users but pinning other
        content is another room, whatever its id). Equal configs have equal signed bytes:
        comparing them first spares the common case (the host relays the member's own config)
        two canonical forms, about a tenth of a member's join."""
        if config != self.config and signed_room_bytes(config) != signed_room_bytes(self.config):
            raise IllegalEventError(
                "room", config.room_id, "empty", "open",
                "the host opened a room other than this member's (its config differs)",
            )  # fmt: skip

    def _refused(self, refused: pr.Refused, out: ClientOutput) -> None:
        out.refused = refused
        if refused.fatal and self._old_host(refused):
            self.protocol = 1
            out.retry = True
            self.phase = MemberPhase.NEW
        elif refused.fatal:
            out.retry = refused.code in RETRYABLE_REFUSALS
            self.phase = MemberPhase.NEW if out.retry else MemberPhase.CLOSED
        elif self._pending:  # the oldest frame not yet answered is the one refused
            head = self._pending.popleft()
            if head is not None:
                self._reproject(head.piece)

    def _old_host(self, refused: pr.Refused) -> bool:
        """Whether ``refused`` is an older host's answer to this member's protocol 2 hello."""
        return (
            self.phase == MemberPhase.HELLO
            and self.protocol >= 2
            and refused.code in OLD_HOST_REFUSALS
        )

    def _answered(self, event: ev.Event) -> None:
        """Match a relayed event about this member with the frame it answers."""
        if isinstance(event, ev.MemberGoodbye):
            if event.user_id == self.user_id and self._pending and self._pending[0] is None:
                self._pending.popleft()
            return
        if not isinstance(event, _PIECE_EVENTS) or event.user_id != self.user_id:
            return
        head = self._pending[0] if self._pending else None
        if head is not None and head.model_copy(update={"at": event.at}) == event:
            self._pending.popleft()  # the host stamps its own time, and changes nothing else
        else:  # not the report awaited (a frame sent twice?): project again from the host's
            self._reproject(event.piece)

    def _should_say_goodbye(self) -> bool:
        me = self.room.members[self.user_id]
        return (
            self.room.status in ("all_done", "goodbye")
            and me.status == "done"
            and not self.goodbye_sent
        )

    def piece_event(self, event: ev.Event) -> list[bytes]:
        """A piece event from this member's downloader (any ``user_id``: it is this member's):
        applied to the local truth; returns the report frames that move the host's view toward
        it (none until joined; events that are not about a piece are ignored)."""
        if not isinstance(event, _PIECE_EVENTS):
            return []
        mine = event.model_copy(update={"user_id": self.user_id})
        self.local.apply(mine)
        if self.phase != MemberPhase.JOINED:
            return []
        key, at = mine.piece, mine.at
        host = self.projected(key)
        moves: list[pr.ReportEvent] = []
        if mine.type in ("resolvable_failed", "folder_rejected"):
            if host.status != "finished":  # the audit trail: said as it happened
                moves += _started(self.user_id, key, host.status, at)
                moves.append(mine)
        else:
            moves = catch_up(self.user_id, key, host, self._local(key), at)
        return [self.report(move) for move in moves]

    def report(self, event: pr.ReportEvent) -> bytes:
        """The frame reporting ``event`` about one of this member's pieces, as it is (the
        projection counts it as on its way to the host). :meth:`piece_event` chooses reports
        that are legal; this sends whatever it is given."""
        if event.user_id != self.user_id:
            raise UsageError(f"{self.user_id!r} cannot report about {event.user_id!r}")
        with contextlib.suppress(IllegalEventError):  # sent as asked: the host will refuse it
            self._projection[event.piece] = _advance(self.projected(event.piece), event)
        self._pending.append(event)
        return pr.encode(pr.Report(event=event))

    # -- peer transfers (protocol 2) -------------------------------------------------------

    def holders(self, piece: str) -> list[str]:
        """The other members that hold ``piece`` finished, are present and serve, as the host
        has told this member (empty before a protocol 2 welcome), by user id."""
        if not self.peers:
            return []
        present = (MemberStatus.CONNECTED, MemberStatus.DONE)
        return sorted(
            user
            for user, member in self.room.members.items()
            if user != self.user_id
            and user in self._serving
            and member.status in present
            and member.pieces[piece].status == PieceStatus.FINISHED
        )

    def want(self, piece: str, form: tm.Form, offset: int = 0, avoid: Sequence[str] = ()) -> bytes:
        """The frame asking the room for ``piece`` in ``form`` from ``offset``, from anyone but
        the users in ``avoid`` (at most :data:`~matchlock.core.transfer_messages.MAX_AVOIDED`)."""
        return pr.encode(tm.Want(piece=piece, form=form, offset=offset, avoid=tuple(avoid)))

    @staticmethod
    def ack(transfer: int, offset: int) -> bytes:
        """The frame saying this member holds every byte of ``transfer`` before ``offset``."""
        return pr.encode(tm.Ack(transfer=transfer, offset=offset))

    @staticmethod
    def end(transfer: int) -> bytes:
        """The frame saying this member, the holder, sent every byte of ``transfer``."""
        return pr.encode(tm.End(transfer=transfer))

    @staticmethod
    def unheld(transfer: int, reason: str) -> bytes:
        """The frame saying this member cannot serve ``transfer`` (``reason``: why)."""
        return pr.encode(tm.Unheld(transfer=transfer, reason=ev.clip(reason)))

    @staticmethod
    def cancel(transfer: int, reason: str) -> bytes:
        """The frame stopping ``transfer``, from either side (``reason``: why)."""
        return pr.encode(tm.Cancel(transfer=transfer, reason=ev.clip(reason)))

    @staticmethod
    def data(transfer: int, offset: int, payload: bytes) -> bytes:
        """The data frame of ``payload`` (at most :data:`~matchlock.core.protocol.MAX_CHUNK_BYTES`)
        of ``transfer`` at ``offset``, as a holder sends it."""
        return pr.data_frame(transfer, offset, payload)

    def host_view(self, piece: str) -> PieceState:
        """What the host has told this member about one of its pieces."""
        return self.room.piece_state(self.user_id, piece)

    def projected(self, piece: str) -> PieceState:
        """What the host will believe about one of this member's pieces once it has handled
        every report this connection sent so far (:meth:`host_view` plus those reports)."""
        found = self._projection.get(piece)
        return found if found is not None else self.host_view(piece)

    def _local(self, piece: str) -> PieceState:
        return self.local.piece_state(self.user_id, piece)

    def _catch_up(self) -> list[bytes]:
        """Just welcomed: the reports that bring the host to what this member has now."""
        frames: list[bytes] = []
        for key in self.config.piece_keys():
            host, local = self.projected(key), self._local(key)
            frames += (self.report(e) for e in catch_up(self.user_id, key, host, local, 0.0))
        return frames

    def _reproject(self, piece: str) -> None:
        """Rebuild the projection of ``piece`` from the host's view and the reports still
        awaited (after a refusal, or a relay of a report this connection did not send)."""
        projected = self.host_view(piece)
        for event in self._pending:
            if event is not None and event.piece == piece:
                try:
                    projected = _advance(projected, event)
                except IllegalEventError:
                    continue  # it will be refused as well
        self._projection[piece] = projected


def _advance(piece: PieceState, event: pr.ReportEvent) -> PieceState:
    """``piece`` after ``event`` as the host's room applies it (status and bytes done), or
    :class:`IllegalEventError` if the host would refuse it."""
    subject = f"{event.user_id} {event.piece}"
    status = PIECE.next_state(piece.status, _TRIGGERS[event.type], subject)
    done = piece.done
    match event:
        case ev.PieceProgress(done=reported):
            if not done <= reported <= piece.size:
                why = f"progress {reported} outside {done}..{piece.size}"
                raise IllegalEventError("piece", subject, piece.status, "progress", why)
            done = reported
        case ev.ResolvableFailed() | ev.PieceRetried():
            done = 0
        case ev.PieceFinished():
            done = piece.size
    return piece.model_copy(update={"status": status, "done": done})


def _started(user_id: str, piece: str, status: str, at: float) -> list[pr.ReportEvent]:
    """What takes a piece the host holds in ``status`` to ``in_progress``."""
    moves: list[pr.ReportEvent] = []
    if status == "error":
        moves.append(ev.PieceRetried(at=at, user_id=user_id, piece=piece))
    if status in ("error", "not_started"):
        moves.append(ev.PieceStarted(at=at, user_id=user_id, piece=piece))
    return moves


def catch_up(
    user_id: str, piece: str, host: PieceState, local: PieceState, at: float
) -> list[pr.ReportEvent]:
    """Reports, each legal after the ones before it, that move the host's view of a piece
    (``host``) toward the member's own (``local``): none when the host is already there or
    ahead (finished is final; bytes already reported are not reported again)."""
    if host.status == "finished" or (host.status == local.status != "in_progress"):
        return []
    moves: list[pr.ReportEvent] = []
    if host.status == "error":  # only a retry leaves an error
        moves.append(ev.PieceRetried(at=at, user_id=user_id, piece=piece))
    match local.status:
        case "not_started":
            return moves
        case "finished":
            moves.append(ev.PieceFinished(at=at, user_id=user_id, piece=piece, source=local.source))
            return moves
    if host.status != "in_progress":
        moves.append(ev.PieceStarted(at=at, user_id=user_id, piece=piece))
    if local.status == "error":
        moves.append(ev.PieceFailed(at=at, user_id=user_id, piece=piece, failures=local.failures))
        return moves
    done = host.done if host.status == "in_progress" else 0
    if local.done < done and local.failures:  # a resolvable failed while the host did not hear
        failure = local.failures[-1]
        moves.append(ev.ResolvableFailed(at=at, user_id=user_id, piece=piece, failure=failure))
        done = 0
    if local.done > done:
        moves.append(ev.PieceProgress(at=at, user_id=user_id, piece=piece, done=local.done))
    return moves
