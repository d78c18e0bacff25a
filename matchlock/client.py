"""A room member as a sans-IO state machine: what to send, and the room as the host tells it.

The shell (see :mod:`matchlock.joining`) sends :meth:`ClientProtocol.hello`, feeds every frame from
the host to :meth:`ClientProtocol.receive`, sends what the returned :class:`ClientOutput` says,
records its ``events`` in the client's own log, and turns the downloader's piece events into
frames with :meth:`ClientProtocol.report`. The client keeps a mirror of the room built only from
the host's events, so its view converges to the host's; it answers the challenge with its key
(Ed25519 signing is deterministic: no randomness here), and says goodbye on its own once the
room is all done.

After a reconnect, :func:`catch_up` lists the events that bring the host's view of this
member's pieces up to what the member really has (the downloads went on while disconnected).

Pure core: no sockets, no clock, no randomness.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from matchlock import events as ev
from matchlock import protocol as pr
from matchlock.config import RoomConfig
from matchlock.errors import IllegalEventError, InputError, UsageError
from matchlock.room import PieceState, Room

__all__ = ["ClientOutput", "ClientProtocol", "ProtocolError", "catch_up"]


class ProtocolError(InputError):
    """The host sent what a correct host never sends (out of order, a gap, an illegal event)."""


@dataclass
class ClientOutput:
    """What the shell must do: record ``events`` (the room's, in order), send ``sends``; and
    what happened: ``joined`` (just welcomed), ``refused`` (the host refused something),
    ``closed`` (the room is closed: the connection ends)."""

    events: list[ev.Event] = field(default_factory=list)
    sends: list[bytes] = field(default_factory=list)
    joined: bool = False
    refused: pr.Refused | None = None
    closed: bool = False


class ClientProtocol:
    """One member's side of a room connection. ``known`` are room events already held (from
    this member's own log, after a restart or a reconnect): only later ones are asked for."""

    def __init__(
        self,
        config: RoomConfig,
        user_id: str,
        key: Ed25519PrivateKey,
        known: Sequence[ev.Event] = (),
    ) -> None:
        if user_id not in config.users:
            raise UsageError(f"{user_id!r} is not expected in room {config.room_id!r}")
        self.config = config
        self.user_id = user_id
        self._key = key
        self.room = Room()
        for event in known:
            self.room.apply(event)
        self.phase = "new"
        self.goodbye_sent = False

    @property
    def seen(self) -> int:
        """How many room events this member holds."""
        return self.room.events

    def hello(self) -> bytes:
        """The first frame of a (re)connection."""
        self.phase = "hello"
        # A goodbye sent on a lost connection may never have arrived: say it again if due.
        self.goodbye_sent = False
        hello = pr.Hello(
            protocol=pr.PROTOCOL_VERSION, room=self.config, user_id=self.user_id, since=self.seen
        )
        return pr.encode(hello)

    def receive(self, data: bytes) -> ClientOutput:
        """Handle one frame from the host; raises :class:`ProtocolError` if the host misbehaves."""
        out = ClientOutput()
        try:
            message = pr.decode_host_message(data)
        except pr.MessageError as error:
            raise ProtocolError(f"the host sent a bad message: {error.reason}") from None
        match message:
            case pr.Challenge(nonce=nonce) if self.phase == "hello":
                signed = self._key.sign(
                    pr.challenge_bytes(self.config.room_id, self.user_id, nonce)
                )
                out.sends.append(pr.encode(pr.Answer(signature=base64.b64encode(signed).decode())))
                self.phase = "answered"
            case pr.Welcome(since=since, events=events) if self.phase == "answered":
                if since != self.seen:
                    raise ProtocolError(
                        f"welcome starts after event {since}, this member holds {self.seen}"
                    )
                self.phase = "joined"
                out.joined = True
                self._apply(events, out)
            case pr.Relay(seq=seq, event=event) if self.phase == "joined":
                if seq != self.seen + 1:
                    raise ProtocolError(f"event {seq} arrived after event {self.seen}")
                self._apply([event], out)
            case pr.Refused() as refused:
                out.refused = refused
                if refused.fatal:
                    self.phase = "closed"
            case _:
                raise ProtocolError(f"{message.type!r} is not expected while {self.phase}")
        return out

    def _apply(self, events: Sequence[ev.Event], out: ClientOutput) -> None:
        for event in events:
            try:
                self.room.apply(event)
            except IllegalEventError as error:
                raise ProtocolError(f"the host sent an illegal event: {error}") from None
            out.events.append(event)
        if self.room.status == "closed":
            self.phase = "closed"
            out.closed = True
        elif self._should_say_goodbye():
            self.goodbye_sent = True
            out.sends.append(pr.encode(pr.Goodbye()))

    def _should_say_goodbye(self) -> bool:
        me = self.room.members[self.user_id]
        return (
            self.room.status in ("all_done", "goodbye")
            and me.status == "done"
            and not self.goodbye_sent
        )

    def report(self, event: pr.ReportEvent) -> bytes:
        """The frame reporting ``event`` about one of this member's pieces."""
        if event.user_id != self.user_id:
            raise UsageError(f"{self.user_id!r} cannot report about {event.user_id!r}")
        return pr.encode(pr.Report(event=event))

    def host_view(self, piece: str) -> PieceState:
        """What the host believes about one of this member's pieces."""
        found = self.room.members[self.user_id].pieces[piece]
        return PieceState(
            status=found.status,
            done=found.done,
            size=found.size,
            source=found.source,
            failures=tuple(found.failures),
        )


def catch_up(
    user_id: str, piece: str, host: PieceState, local: PieceState, at: float
) -> list[pr.ReportEvent]:
    """Events that move the host's view of a piece (``host``) to the member's own (``local``)."""
    events: list[pr.ReportEvent] = []
    status = host.status
    if status == local.status and local.status != "in_progress":
        return events
    if status == "error":
        events.append(ev.PieceRetried(at=at, user_id=user_id, piece=piece))
        status = "not_started"
    if local.status == "finished":
        events.append(ev.PieceFinished(at=at, user_id=user_id, piece=piece, source=local.source))
        return events
    if status == "not_started" and local.status in ("in_progress", "error"):
        events.append(ev.PieceStarted(at=at, user_id=user_id, piece=piece))
    if local.status == "error":
        events.append(ev.PieceFailed(at=at, user_id=user_id, piece=piece, failures=local.failures))
    elif local.status == "in_progress":
        host_done = host.done if status == "in_progress" else 0
        if local.done < host_done and local.failures:  # a resolvable failed while disconnected
            events.append(
                ev.ResolvableFailed(at=at, user_id=user_id, piece=piece, failure=local.failures[-1])
            )
            host_done = 0
        if local.done > host_done:
            events.append(ev.PieceProgress(at=at, user_id=user_id, piece=piece, done=local.done))
    return events
