"""A host core and peers that speak the wire protocol by hand (hello, answer, reports), for the
tests of the host's rules: nothing of the member core, so a host test fails only for the host."""

from __future__ import annotations

import base64
import json
import sys

from matchlock.core import events as ev
from matchlock.core import protocol as pr
from matchlock.core.config import RoomConfig
from matchlock.core.host import HostOutput, HostProtocol
from matchlock.tools.testing import insecure_key, pinned, signed_room

CONFIG = signed_room("r1", ("alice", "bob"), pinned({"chars/kfm": 100}))
"""A room of alice and bob expecting one piece."""

SOLO = signed_room("solo", ("alice",), pinned({"chars/kfm": 100}))
"""A room of alice alone."""


class Net:
    """A host and its peers: every output is handed to the peers it names."""

    def __init__(self, host: HostProtocol | None = None) -> None:
        self.host = host or HostProtocol()
        self.peers: list[Peer] = []
        self.recorded: list[ev.Event] = []

    def take(self, out: HostOutput) -> HostOutput:
        """Keep what ``out`` records, hand each peer its frames and closes; return ``out``."""
        self.recorded += [event for _, event, _ in out.events]
        for peer in self.peers:
            peer.got += [pr.decode_host_message(f) for conn, f in out.sends if conn == peer.conn]
            peer.closed = peer.closed or peer.conn in out.closes
        return out

    def peer(self, user: str, config: RoomConfig = CONFIG) -> Peer:
        """A new connection that will speak for ``user`` (nothing sent yet)."""
        peer = Peer(self, user, config, len(self.peers) + 1)
        self.peers.append(peer)
        self.host.connect(peer.conn, peer.conn.to_bytes(16, "big"))
        return peer

    def member(self, user: str, config: RoomConfig = CONFIG) -> Peer:
        """A new connection that has joined as ``user`` (hello, answer, welcome)."""
        peer = self.peer(user, config)
        peer.hello()
        peer.answer()
        assert any(isinstance(m, pr.Welcome) for m in peer.got)
        return peer


class Peer:
    """One connection to the host, speaking the wire protocol by hand."""

    def __init__(self, net: Net, user: str, config: RoomConfig, conn: int) -> None:
        self.net, self.user, self.config, self.conn = net, user, config, conn
        self.got: list[pr.HostMessage] = []
        self.closed = False

    def send(self, frame: bytes, at: float = 1.0) -> HostOutput:
        """Hand ``frame`` to the host as received at ``at``."""
        return self.net.take(self.net.host.receive(self.conn, frame, at))

    def hello(self) -> None:
        """Say hello for this peer's user and room."""
        hello = pr.Hello(protocol=pr.PROTOCOL_VERSION, room=self.config, user_id=self.user)
        self.send(pr.encode(hello))

    def answer(self) -> None:
        """Answer the challenge just received with the user's signature."""
        challenge = self.got[-1]
        assert isinstance(challenge, pr.Challenge)
        message = pr.challenge_bytes(self.config.room_id, self.user, challenge.nonce)
        signature = base64.b64encode(insecure_key(self.user).sign(message)).decode()
        self.send(pr.encode(pr.Answer(signature=signature)))

    def report(self, event: ev.Event, at: float = 1.0) -> HostOutput:
        """Report ``event`` about one of this member's pieces."""
        body = json.loads(ev.EventAdapter.dump_json(event))
        return self.send(json.dumps({"type": "report", "event": body}).encode(), at)

    def goodbye(self) -> HostOutput:
        """Say goodbye."""
        return self.send(pr.encode(pr.Goodbye()))

    def accepted(self) -> bool:
        """Whether the last thing this peer sent was accepted (it was told no refusal)."""
        return not isinstance(self.got[-1], pr.Refused)

    def refused(self) -> pr.Refused:
        """The refusal this peer was sent last (failing the test when it was none)."""
        last = self.got[-1]
        assert isinstance(last, pr.Refused), last
        return last

    def relayed(self) -> list[ev.Event]:
        """Every event relayed to this peer so far."""
        return [m.event for m in self.got if isinstance(m, pr.Relay)]


def finish(peer: Peer) -> None:
    """The peer reports its one piece finished (from its cache)."""
    peer.report(ev.PieceFinished(at=0, user_id=peer.user, piece="chars/kfm", source="cache"))


def history_limits(host: HostProtocol, room_id: str) -> object:
    """The module whose history limits the host's rooms read (so a test can lower them)."""
    return sys.modules[type(host.rooms[room_id]).__module__]
