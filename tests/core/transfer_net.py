"""A host core and members that speak protocol 2 by hand, for the tests of peer transfers: every
frame a member is sent is kept as bytes (data frames are not JSON), and read back on demand."""

from __future__ import annotations

import base64
import hashlib
import json

from matchlock.core import events as ev
from matchlock.core import protocol as pr
from matchlock.core import transfer_messages as tm
from matchlock.core.config import PinnedPiece
from matchlock.core.host import HostOutput, HostProtocol
from matchlock.tools.testing import insecure_key, signed_room

USERS = ("alice", "bob", "carol", "dave", "erin")
KFM = "chars/kfm"
"""An archive of 6 MiB: more than a window, so the window and the bound are apart."""
DOJO = "stages/dojo"
"""A folder only."""
SONG = "music/song"
"""Both an archive and a folder."""

KFM_SIZE = 6 << 20


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


CONFIG = signed_room(
    "transfers",
    USERS,
    {
        KFM: PinnedPiece(sha256=_digest(KFM), size=KFM_SIZE),
        DOJO: PinnedPiece(folder_sha256=_digest(DOJO), folder_size=5000),
        SONG: PinnedPiece(
            sha256=_digest(SONG), size=300, folder_sha256=_digest("f"), folder_size=200
        ),
    },
)


class Net:
    """A host and its members: every output is handed to the members it names."""

    def __init__(self) -> None:
        self.host = HostProtocol()
        self.members: dict[int, Member] = {}
        self.recorded: list[ev.Event] = []

    def take(self, out: HostOutput) -> HostOutput:
        """Keep what ``out`` records; hand each member its frames and closes; return ``out``."""
        self.recorded += [event for _, event, _ in out.events]
        for conn, frame in out.sends:
            self.members[conn].frames.append(frame)
        for conn in out.closes:
            self.members[conn].closed = True
        return out

    def connect(self, user: str) -> Member:
        """A new connection that will speak for ``user``."""
        conn = len(self.members) + 1
        member = self.members[conn] = Member(self, user, conn)
        self.host.connect(conn, conn.to_bytes(16, "big"))
        return member

    def join(self, user: str, *, protocol: int = 2, serve: bool = True) -> Member:
        """A member that said hello (``protocol``, ``serve``), answered and was welcomed."""
        member = self.connect(user)
        member.hello(protocol, serve)
        member.answer()
        assert isinstance(member.messages()[-1], pr.Relay | tm.Peer), member.messages()
        return member

    def holding(self, user: str, *pieces: str, serve: bool = True) -> Member:
        """A member of protocol 2 that has finished ``pieces``."""
        member = self.join(user, serve=serve)
        for piece in pieces:
            member.report(ev.PieceFinished(at=0, user_id=user, piece=piece, source="cache"))
        return member


class Member:
    """One connection to the host, speaking the protocol by hand."""

    def __init__(self, net: Net, user: str, conn: int) -> None:
        self.net, self.user, self.conn = net, user, conn
        self.frames: list[bytes] = []
        self.closed = False

    def send(self, frame: bytes) -> HostOutput:
        """Hand ``frame`` to the host."""
        return self.net.take(self.net.host.receive(self.conn, frame, 1.0))

    def message(self, message: tm.MemberTransferMessage) -> HostOutput:
        """Send a transfer message."""
        return self.send(pr.encode(message))

    def hello(self, protocol: int = 2, serve: bool = True) -> None:
        """Say hello for this member's user."""
        hello = pr.Hello(protocol=protocol, room=CONFIG, user_id=self.user, serve=serve)
        self.send(pr.encode(hello))

    def answer(self) -> None:
        """Answer the challenge just received."""
        challenge = self.messages()[-1]
        assert isinstance(challenge, pr.Challenge)
        message = pr.challenge_bytes(CONFIG.room_id, self.user, challenge.nonce)
        signature = base64.b64encode(insecure_key(self.user).sign(message)).decode()
        self.send(pr.encode(pr.Answer(signature=signature)))

    def report(self, event: ev.Event) -> HostOutput:
        """Report ``event`` about one of this member's pieces."""
        return self.send(pr.encode(pr.Report.model_validate({"event": event.model_dump()})))

    def want(
        self, piece: str, form: tm.Form = "archive", offset: int = 0, avoid: tuple[str, ...] = ()
    ) -> HostOutput:
        """Ask the room for ``piece``."""
        return self.message(tm.Want(piece=piece, form=form, offset=offset, avoid=avoid))

    def messages(self) -> list[pr.HostMessage | pr.DataChunk]:
        """Every frame this member was sent, decoded (data frames as chunks)."""
        return [
            pr.parse_data_frame(f) if pr.is_data_frame(f) else pr.decode_host_message(f)
            for f in self.frames
        ]

    def last(self) -> pr.HostMessage | pr.DataChunk:
        """The last frame this member was sent, decoded."""
        return self.messages()[-1]

    def transfers(self) -> list[object]:
        """The transfer messages and chunks this member was sent, in order."""
        kinds = (tm.Sending, tm.Unavailable, tm.Serve, tm.Ack, tm.End, tm.Cut, pr.DataChunk)
        return [m for m in self.messages() if isinstance(m, kinds)]

    def refused(self) -> pr.Refused:
        """The refusal this member was sent last."""
        last = self.last()
        assert isinstance(last, pr.Refused), last
        return last

    def cuts(self) -> list[tm.Cut]:
        """Every ``cut`` this member was sent."""
        return [m for m in self.messages() if isinstance(m, tm.Cut)]

    def keys(self, kind: str) -> list[set[str]]:
        """The JSON keys of every frame of ``type`` ``kind`` this member was sent."""
        found = [json.loads(f) for f in self.frames if not pr.is_data_frame(f)]
        return [set(body) for body in found if body.get("type") == kind]
