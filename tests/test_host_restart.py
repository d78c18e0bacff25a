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

from matchlock import protocol as pr
from matchlock.client import ClientProtocol
from matchlock.config import PinnedPiece
from matchlock.eventlog import read_events, replay_file
from matchlock.hosting import RoomHost
from matchlock.joining import join
from matchlock.testing import insecure_key, signed_room
from matchlock.transport import Connection
from matchlock.transport.connect import listen, open_connection
from tests.downloads.conftest import ContentServer, config, piece, sha256, zip_bytes
from tests.transport.test_serve import start_serve

BIG = zip_bytes({"big.sff": random.Random(7).randbytes(1 << 20)})
ROOM = signed_room(
    "restart", ["ann", "ben"], {"chars/big": PinnedPiece(sha256=sha256(BIG), size=len(BIG))}
)


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
