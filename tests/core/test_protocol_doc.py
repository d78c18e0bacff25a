"""docs/protocol.md's example transcript is what the reference implementation sends."""

from __future__ import annotations

import re
from pathlib import Path

from matchlock.core import events as ev
from matchlock.core import protocol as pr
from matchlock.core import transfer_messages as tm
from matchlock.core.client import ClientProtocol
from matchlock.core.config import MAX_EXACT_INTEGER, MAX_NAME_LENGTH, PinnedPiece
from matchlock.core.host import HostProtocol
from matchlock.tools.testing import insecure_key, signed_room

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


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


def _documented(title: str) -> list[str]:
    block = DOC.read_text().split(title, 1)[1].split("```")[1]
    return [line for line in block.strip().splitlines() if "..." not in line]


def test_the_documented_transcript_is_exact_where_not_shortened() -> None:
    documented = _documented("## Example transcript")
    assert len(documented) >= 10
    actual = transcript()
    positions = [actual.index(line) for line in documented]
    assert positions == sorted(positions)


def test_the_documented_transfer_transcript_is_exact_where_not_shortened() -> None:
    documented = _documented("### Transfer transcript")
    assert len(documented) >= 12
    actual = transfer_transcript()
    positions = [actual.index(line) for line in documented]
    assert positions == sorted(positions)


def _section(title: str) -> str:
    return DOC.read_text().split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def _rows(title: str) -> list[list[str]]:
    lines = [line for line in _section(title).splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[2:]]


def test_every_refusal_code_is_documented_and_every_documented_code_is_sent() -> None:
    source = "".join(  # the host core's refusals: the join and the room, and admission
        (DOC.parent.parent / "matchlock" / "core" / f"{module}.py").read_text()
        for module in ("host", "admission", "transfers")
    )
    sent = set(re.findall(r'code="([a-z-]+)"', source))
    sent |= set(re.findall(r'(?:return|refusal =) "([a-z-]+)", ', source))
    documented = {code.strip("`"): fatal == "yes" for code, fatal, _ in _rows("Refusal codes")}
    assert set(documented) == pr.DECODE_CODES | sent
    assert all(documented[code] for code in pr.DECODE_CODES)  # the host closes on each


def test_the_limits_table_states_the_code_s_limits() -> None:
    limits = {what: most for what, _, most in _rows("Limits")}
    assert limits["a frame from a member"].startswith(f"1 MiB ({pr.MAX_MESSAGE_BYTES:,} bytes)")
    assert limits["a frame from the host"] == f"{pr.MAX_HOST_MESSAGE_BYTES >> 20} MiB"
    assert limits["reason"] == f"{ev.MAX_REASON_LENGTH:,}"
    assert limits["refusal code"] == str(ev.MAX_CODE_LENGTH)
    assert limits["the id a refused peer claimed"] == str(ev.MAX_CLAIMED_ID_LENGTH)
    assert limits["URL"].startswith(f"{ev.MAX_URL_LENGTH:,} ")
    assert limits["where a piece came from"] == f"{ev.MAX_URL_LENGTH:,}"
    assert limits["folder"] == f"{ev.MAX_PATH_LENGTH:,}"
    assert limits["failures"].startswith(f"{ev.MAX_FAILURES} items")
    assert limits["user, room, collection and piece ids"].startswith(f"{MAX_NAME_LENGTH},")
    assert f"({MAX_EXACT_INTEGER:,})" in limits["counts and versions"]
    assert limits["nonce"].startswith(f"32 to {pr.MAX_NONCE_LENGTH} ")
    assert f"{ev.MAX_REPORT_EVENT_BYTES >> 10} KiB" in _section("Limits")
    assert limits["users to avoid"] == f"{tm.MAX_AVOIDED} ids"
    assert limits["transfer id"] == f"1 to 2^32 - 1 ({tm.MAX_TRANSFER_ID:,})"
    assert limits["a data frame's payload"].startswith(
        f"{pr.MAX_CHUNK_BYTES:,} bytes ({pr.MAX_CHUNK_BYTES >> 10} KiB); the whole frame "
        f"{pr.MAX_CHUNK_BYTES + pr.DATA_FRAME_HEADER_BYTES:,}"
    )
    window = pr.TRANSFER_WINDOW_BYTES
    assert limits["bytes not yet acknowledged"].startswith(f"{window >> 20} MiB ({window:,} bytes)")
    assert limits["uploads at once"] == str(pr.MAX_UPLOADS_PER_MEMBER)
    assert limits["members that serve"].startswith(f"{pr.MAX_SERVING:,} ids")


def test_the_folder_bound_stated_is_the_code_s() -> None:
    from matchlock.core.folderstream import folder_stream_bound

    assert f"at most {folder_stream_bound(0):,} + `folder_size` bytes" in _section("Peer transfers")


def test_the_events_table_is_the_code() -> None:
    from matchlock.tools.schemas import event_table

    assert event_table() in DOC.read_text(), "regenerate the Events table of docs/protocol.md"


def _shown(frame: bytes) -> str:
    if not pr.is_data_frame(frame):
        return frame.decode()
    chunk = pr.parse_data_frame(frame)
    head = f"{pr.DATA_FRAME_TAG:02x} {chunk.transfer:08x} {chunk.offset:016x}"
    return f"<binary {head} {chunk.payload.hex()}>"


def transfer_transcript() -> list[str]:
    """Alice holds chars/kfm and serves; bob joins, wants it, and is sent it through the host."""
    config = signed_room(
        "r1", ["alice", "bob"], {"chars/kfm": PinnedPiece(sha256="2c" * 32, size=11)}
    )
    host = HostProtocol()
    members = {
        1: ClientProtocol(config, "alice", insecure_key("alice"), serve=True),
        2: ClientProtocol(config, "bob", insecure_key("bob"), serve=True),
    }
    names = {1: "alice", 2: "bob"}
    lines: list[str] = []
    shown = [False]

    def send(conn: int, frame: bytes, at: float) -> None:
        if shown[0]:
            lines.append(f"{names[conn]} -> host: {_shown(frame)}")
        for to, reply in host.receive(conn, frame, at).sends:
            if shown[0]:
                lines.append(f"host -> {names[to]}: {_shown(reply)}")
            for answer in members[to].receive(reply).sends:
                send(to, answer, at)

    host.connect(1, bytes(16))
    send(1, members[1].hello(), 1700000000.0)
    finished = ev.PieceFinished(at=0, user_id="alice", piece="chars/kfm", source="cache")
    for frame in members[1].piece_event(finished):
        send(1, frame, 1700000000.0)
    host.connect(2, bytes(15) + b"\x01")
    shown[0] = True
    send(2, members[2].hello(), 1700000001.0)
    del lines[:3]  # bob's hello, challenge and answer: as in the first transcript
    send(2, members[2].want("chars/kfm", "archive"), 1700000002.0)
    send(1, members[1].data(1, 0, b"hello "), 1700000002.0)
    send(1, members[1].data(1, 6, b"world"), 1700000002.0)
    send(2, members[2].ack(1, 11), 1700000002.0)
    send(1, members[1].end(1), 1700000002.0)
    return lines
