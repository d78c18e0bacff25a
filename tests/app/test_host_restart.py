"""The room host as its own process, over real sockets: killed mid-room and restarted from its
logs while the members wait; and a hostile oversized frame refused, recorded and closed."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from matchlock.app.hosting import RoomHost
from matchlock.app.joining import join
from matchlock.core import events as ev
from matchlock.core import protocol as pr
from matchlock.core.chain import encode_event, encode_header
from matchlock.core.client import ClientProtocol
from matchlock.core.config import PinnedPiece, RoomConfig
from matchlock.store import MemoryRepository
from matchlock.store.eventlog import read_events, read_store, replay_file
from matchlock.tools.testing import insecure_key, signed_room
from matchlock.transport import Connection
from matchlock.transport.connect import listen, open_connection
from tests.downloads.conftest import ContentServer, config, piece, sha256, zip_bytes
from tests.transport.test_serve import start_serve

BIG = zip_bytes({"big.sff": random.Random(7).randbytes(1 << 20)})
PINS = {"chars/big": PinnedPiece(sha256=sha256(BIG), size=len(BIG))}
ROOM = signed_room("restart", ["ann", "ben"], PINS)


@pytest.fixture
async def server() -> AsyncIterator[ContentServer]:
    content = ContentServer()
    content.add("big.zip", BIG)
    await content.start()
    yield content
    await content.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_host_killed_and_restarted_from_its_logs_while_members_wait(
    server: ContentServer, tmp_path: Path
) -> None:
    port = free_port()
    serve_args = ("--listen", f"127.0.0.1:{port}", "--log-dir", str(tmp_path / "host"))
    process, url = await start_serve(*serve_args)
    locks = config(
        {
            "chars": {
                "mandatory": True,
                "pieces": {"big": piece(BIG, server.url("slow", "big.zip"), unpack="zip")},
            }
        }
    )
    progress_seen = asyncio.Event()

    def watch(event: object) -> None:
        if getattr(event, "type", "") == "piece_progress":
            progress_seen.set()

    members = [
        asyncio.ensure_future(
            join(
                url,
                room=ROOM,
                user_id=user,
                key=insecure_key(user),
                config=locks,
                dest=tmp_path / user,
                log_path=tmp_path / f"{user}.log",
                on_event=watch,
                retry_delay=0.1,
                deadline=60,
            )
        )
        for user in ("ann", "ben")
    ]
    async with asyncio.timeout(20):
        await progress_seen.wait()
    process.send_signal(signal.SIGKILL)  # no goodbye, no flush: a crash
    await process.wait()
    process, _ = await start_serve(*serve_args)
    try:
        results = await asyncio.gather(*members)
    finally:
        process.send_signal(signal.SIGTERM)
        await process.wait()
    assert all(set(r) == {"chars/big"} for r in results)
    events = read_events(tmp_path / "host" / "restart.log").events
    assert [e for e in events if getattr(e, "reason", "") == "host restarted"]
    final = replay_file(tmp_path / "host" / "restart.log").state
    assert final.status == "closed"
    for user in ("ann", "ben"):
        assert replay_file(tmp_path / f"{user}.log").state == final


async def prove(conn: Connection, user: str) -> None:
    """Join ``ROOM`` as ``user`` on ``conn``, up to the welcome."""
    client = ClientProtocol(ROOM, user, insecure_key(user))
    conn.send_nowait(client.hello())
    conn.send_nowait(client.receive(await conn.recv()).sends[0])
    assert client.receive(await conn.recv()).joined


async def test_an_oversized_frame_over_tcp_is_refused_recorded_and_closed(tmp_path: Path) -> None:
    host = RoomHost(tmp_path)
    await host.start()
    listener = await listen("tcp://127.0.0.1:0", host)
    conn = await open_connection(listener.url)
    await prove(conn, "ann")
    conn.send_nowait(b"{" + b" " * (pr.MAX_MESSAGE_BYTES + 10) + b"}")
    refused = pr.decode_host_message(await conn.recv())
    while isinstance(refused, pr.Relay):  # ann's own joining comes first
        refused = pr.decode_host_message(await conn.recv())
    assert isinstance(refused, pr.Refused) and refused.code == "too-large" and refused.fatal
    await listener.close()
    await host.stop()
    lines = (tmp_path / "restart.log").read_text().splitlines()
    assert any('"code":"too-large"' in line for line in lines)
    assert [json.loads(line)["event"]["type"] for line in lines[-2:]] == [
        "member_refused",
        "member_disconnected",  # a fatal refusal closes a member's connection
    ]


async def test_a_room_log_whose_opening_was_torn_is_dropped_and_the_room_opens_again(
    tmp_path: Path,
) -> None:
    """Found by the stateful protocol test: a crash tearing a room's first event left a log
    with no event, and the restarted host refused to start."""
    first = RoomHost(tmp_path)
    await first.start()
    listener = await listen("tcp://127.0.0.1:0", first)
    conn = await open_connection(listener.url)
    await prove(conn, "ann")  # the first proven member opens the room
    await listener.close()
    await first.stop()
    log = tmp_path / "restart.log"
    header, opened = log.read_bytes().splitlines(keepends=True)[:2]
    log.write_bytes(header + opened[: len(opened) // 2])  # the crash tore the opening
    second = RoomHost(tmp_path)
    await second.start()
    assert not log.exists() and second.core.rooms == {}
    listener = await listen("tcp://127.0.0.1:0", second)
    conn = await open_connection(listener.url)
    await prove(conn, "ann")
    await listener.close()
    await second.stop()
    assert read_events(log).events[0].type == "room_opened"


GOOD = signed_room("good", ["ann", "ben"], PINS)
"""A room of the same content as ROOM, restored from its log at a restart."""
BAD = signed_room("bad", ["ann", "ben"], PINS)
"""A room whose log is damaged: quarantined."""


def room_lines(room: RoomConfig, *events: ev.Event) -> list[bytes]:
    """A room log's lines: opened, then ``events``."""
    header, prev = encode_header(f"room/{room.room_id}")
    lines = [header]
    for seq, event in enumerate([ev.RoomOpened(at=1, config=room), *events], start=1):
        line, prev = encode_event(seq, prev, event)
        lines.append(line)
    return lines


JOINS: list[ev.Event] = [
    ev.MemberJoined(at=2, user_id="ann"),
    ev.MemberDisconnected(at=3, user_id="ann"),
]


def damaged(kind: str) -> tuple[list[bytes], int]:
    """The lines of room BAD's log damaged in the way ``kind`` says, and the bad line's number."""
    lines = room_lines(BAD, *JOINS, ev.MemberJoined(at=4, user_id="ann"))
    if kind == "changed byte":
        lines[2] = lines[2].replace(b'"at":2', b'"at":7')
        return lines, 3
    if kind == "broken chain":  # line 3 whole, self-hashed and legal: only line 4's prev shows it
        other = ev.MemberJoined(at=9, user_id="ann")
        lines[2] = encode_event(2, lines[1][-67:-3].decode(), other)[0]
        return lines, 4
    if kind == "illegal event":
        return room_lines(BAD, ev.MemberDone(at=2, user_id="ann")), 3
    return room_lines(GOOD, *JOINS), 2  # the log of another room, under bad's name


@pytest.mark.parametrize("kind", ["changed byte", "broken chain", "illegal event", "another room"])
async def test_a_damaged_log_quarantines_its_room_and_every_other_room_is_restored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    lines, bad_line = damaged(kind)
    (tmp_path / "bad.log").write_bytes(b"".join(lines))
    (tmp_path / "good.log").write_bytes(b"".join(room_lines(GOOD, *JOINS)))
    host = RoomHost(tmp_path)
    await host.start()
    await host.stop()
    assert set(host.core.rooms) == {"good"} and set(host.logs) == {"good"}
    assert set(host.core.quarantined) == {"bad"}
    assert f"at line {bad_line}:" in host.core.quarantined["bad"]
    assert f"room bad quarantined, its log is damaged: {tmp_path / 'bad.log'}:{bad_line}:" in (
        caplog.text
    )
    assert (tmp_path / "bad.log").read_bytes() == b"".join(lines)  # kept as it was, for a look


async def test_a_host_on_a_memory_repository_restarts_from_what_a_power_loss_left() -> None:
    repo = MemoryRepository()
    store = repo.create("good")
    await store.append(room_lines(GOOD)[:2], durable=True)
    await store.append(room_lines(GOOD, *JOINS)[2:], durable=False)
    repo.crash(lambda _, unsynced: unsynced - 5)  # the last line is torn
    host = RoomHost(store=repo)
    await host.start()
    await host.stop()
    events = read_store(repo.store("good")).events
    assert events[:2] == [ev.RoomOpened(at=1, config=GOOD), JOINS[0]]
    assert events[2:] == [
        ev.MemberDisconnected(at=events[2].at, user_id="ann", reason="host restarted")
    ]


async def test_serve_restarts_beside_empty_torn_and_damaged_logs_and_serves_every_room(
    server: ContentServer, tmp_path: Path
) -> None:
    """Issue 9.3 and 10.8 on a real ``matchlock serve``: a log that appeared as the host was
    killed (0 bytes, or a torn header) is recovered; a damaged one quarantines its room only."""
    logs = tmp_path / "host"
    logs.mkdir()
    (logs / "good.log").write_bytes(b"".join(room_lines(GOOD, *JOINS)))
    bad, line = damaged("broken chain")
    (logs / "bad.log").write_bytes(b"".join(bad))
    (logs / "appeared.log").write_bytes(b"")
    (logs / "torn.log").write_bytes(room_lines(ROOM)[0][:50])
    process, url = await start_serve("--listen", "127.0.0.1:0", "--log-dir", str(logs))
    try:
        refused = await hello_refusal(url, BAD)
        assert (refused.code, refused.fatal) == ("quarantined", True)
        assert f"damaged at line {line}" in refused.reason
        locks = config(
            {
                "chars": {
                    "mandatory": True,
                    "pieces": {"big": piece(BIG, server.url("ok", "big.zip"), unpack="zip")},
                }
            }
        )
        results = await asyncio.gather(
            *(
                join(
                    url,
                    room=GOOD,
                    user_id=user,
                    key=insecure_key(user),
                    config=locks,
                    dest=tmp_path / user,
                    deadline=30,
                )
                for user in ("ann", "ben")
            )
        )
    finally:
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            _, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    assert all(set(r) == {"chars/big"} for r in results)
    assert replay_file(logs / "good.log").state.status == "closed"
    assert sorted(p.name for p in logs.iterdir()) == [".journal", "bad.log", "good.log"]
    assert (logs / "bad.log").read_bytes() == b"".join(bad)
    said = stderr.decode()
    assert f"{logs / 'bad.log'}:{line}: prev does not match" in said and "quarantined" in said
    assert f"{logs / 'appeared.log'}: the header was torn by a crash (0 bytes survived)" in said


async def hello_refusal(url: str, room: RoomConfig) -> pr.Refused:
    """Say hello to ``room`` as ann, answering a challenge; the refusal the host sends."""
    member = ClientProtocol(room, "ann", insecure_key("ann"))
    conn = await open_connection(url)
    conn.send_nowait(member.hello())
    async with asyncio.timeout(10):
        while True:
            frame = await conn.recv()
            message = pr.decode_host_message(frame)
            if isinstance(message, pr.Refused):
                await conn.close()
                return message
            for reply in member.receive(frame).sends:
                conn.send_nowait(reply)


async def test_a_file_that_is_no_log_quarantines_its_room_and_is_left_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "notes.log").write_bytes(b"remember the milk")  # not even a torn header
    host = RoomHost(tmp_path)
    await host.start()
    await host.stop()
    assert host.core.quarantined == {"notes": "the host's log of the room is damaged"}
    assert "not a matchlock log header" in caplog.text
    assert (tmp_path / "notes.log").read_bytes() == b"remember the milk"
