"""docs/protocol.md's example transcript is what the reference implementation sends."""

from __future__ import annotations

from pathlib import Path

from matchlock import events as ev
from matchlock.client import ClientProtocol
from matchlock.config import PinnedPiece
from matchlock.host import HostProtocol
from matchlock.testing import insecure_key, signed_room

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"


def transcript() -> list[str]:
    config = signed_room(
        "r1", ["alice", "bob"], {"chars/kfm": PinnedPiece(sha256="9f" * 32, size=48213)}
    )
    host = HostProtocol()
    alice = ClientProtocol(config, "alice", insecure_key("alice"))
    host.connect(1, bytes.fromhex("00112233445566778899aabbccddeeff"))
    lines: list[str] = []
    replies: list[bytes] = []

    def send(frame: bytes, at: float) -> None:
        lines.append(f"alice -> host: {frame.decode()}")
        for _, reply in host.receive(1, frame, at).sends:
            lines.append(f"host -> alice: {reply.decode()}")
            replies.append(reply)

    send(alice.hello(), 1700000000.0)
    send(alice.receive(replies[-1]).sends[0], 1700000000.1)
    for reply in replies[1:]:
        alice.receive(reply)
    url = "https://mirror-a.example/kfm.zip"
    for event in (
        ev.PieceStarted(at=0, user_id="alice", piece="chars/kfm"),
        ev.PieceProgress(at=0, user_id="alice", piece="chars/kfm", done=24000),
        ev.PieceFinished(at=0, user_id="alice", piece="chars/kfm", source=url),
    ):
        send(alice.report(event), 1700000001.0)
    return lines


def test_the_documented_transcript_is_exact_where_not_shortened() -> None:
    block = DOC.read_text().split("## Example transcript", 1)[1].split("```")[1]
    documented = [line for line in block.strip().splitlines() if "..." not in line]
    assert len(documented) >= 10
    actual = transcript()
    positions = [actual.index(line) for line in documented]
    assert positions == sorted(positions)
