"""Joining across failures, with the real shell: a host that dies during the handshake (for
each transport's URL), nobody answering LAN discovery yet, a host that still holds the
member's previous connection, and piece events racing a welcome's catch-up (issue 9.5 and
9.6). Each fault only delays the member, which then completes."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from matchlock.app.hosting import RoomHost
from matchlock.app.joining import Connector, join
from matchlock.core import events as ev
from matchlock.core.client import ClientProtocol
from matchlock.core.config import PinnedPiece, RoomConfig
from matchlock.store.eventlog import EventLog, read_events, replay_file
from matchlock.tools.testing import insecure_key, signed_room
from matchlock.transport import Connection
from matchlock.transport.connect import listen, open_connection
from matchlock.transport.lan import serve_lan
from matchlock.transport.memory import memory_connector
from tests.app.test_join import ROOM, match_lock, pinned_piece
from tests.downloads.conftest import ContentServer, config


@pytest.mark.parametrize("scheme", ["ws", "tcp"])
@pytest.mark.parametrize(
    "answer",
    [
        b"",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: webs",
        b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n",  # a proxy, host down
    ],
)
async def test_a_member_retries_a_host_that_dies_during_the_handshake(
    server: ContentServer, tmp_path: Path, scheme: str, answer: bytes
) -> None:
    """Issue 9.5: whatever answers on the host's port first (a socket that closes at once, half
    an HTTP response, a proxy's 502), the member tries again until the real host comes up."""
    calls: list[bytes] = []

    async def dying_host(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        calls.append(await reader.read(100))
        writer.write(answer)
        writer.close()

    impostor = await asyncio.start_server(dying_host, "127.0.0.1", 0)
    port = impostor.sockets[0].getsockname()[1]
    url = f"{scheme}://127.0.0.1:{port}"
    room = signed_room("retry", ("alice",), dict(ROOM.content))
    joining = asyncio.create_task(
        join(
            url,
            room=room,
            user_id="alice",
            key=insecure_key("alice"),
            config=match_lock(server, ("ok",)),
            dest=tmp_path / "cache",
            retry_delay=0.02,
            deadline=60,
        )
    )
    while len(calls) < 3 and not joining.done():
        await asyncio.sleep(0.02)
    assert not joining.done(), joining.exception()  # still trying, not dead
    impostor.close()
    await impostor.wait_closed()
    host = RoomHost(tmp_path / "host")
    await host.start()
    listener = await listen(url, host)
    folders = await joining
    await listener.close()
    await host.stop()
    assert set(folders) == {"chars/kfm", "stages/dojo"}
    assert replay_file(tmp_path / "host" / "retry.log").state.status == "closed"


async def test_piece_events_during_a_log_write_never_overtake_the_catch_up(tmp_path: Path) -> None:
    """Found by the simulation: a welcome's catch-up frames were sent only once the member's
    log had recorded the welcome, and a progress report made during that write went first;
    the catch-up's lower progress then arrived second and was refused. (Every append of this
    member's log is fsynced, so that each one waits for the disk.)"""
    room = signed_room(
        "order", ("alice",), {"chars/big": PinnedPiece(sha256="0" * 64, size=1 << 30)}
    )
    host = RoomHost(tmp_path / "host")
    await host.start()
    plain = memory_connector(host)
    connections: list[Any] = []

    class CutAtProgress:
        """The first connection: lost once it relays a progress, so the download goes on."""

        def __init__(self, conn: Any) -> None:
            self.conn = conn
            self.send_nowait, self.close = conn.send_nowait, conn.close

        async def recv(self) -> bytes:
            frame: bytes = await self.conn.recv()
            if b'"piece_progress"' in frame:
                await self.conn.close()
            return frame

    async def cut_once(url: str) -> Any:
        conn = await plain(url)
        connections.append(conn)
        return CutAtProgress(conn) if len(connections) == 1 else conn

    async def install(keys: list[str], emit: Callable[[ev.Event], None]) -> dict[str, Path]:
        emit(ev.PieceStarted(at=0.0, user_id="local", piece="chars/big"))
        done = after = 0
        while after < 500:  # a report at every turn of the loop, well past the reconnect
            done += 1
            after += len(connections) > 1
            emit(ev.PieceProgress(at=0.0, user_id="local", piece="chars/big", done=done))
            await asyncio.sleep(0)
        emit(ev.PieceFinished(at=0.0, user_id="local", piece="chars/big", source="here"))
        return {"chars/big": tmp_path}

    locks = config(
        {"chars": {"mandatory": True, "pieces": {"big": pinned_piece(room, "chars/big")}}}
    )
    log = await EventLog.create(tmp_path / "alice.log", "client/order/alice", durability="every")
    await join(
        "memory://", room=room, user_id="alice", key=insecure_key("alice"), config=locks,
        dest=tmp_path, log=(log, []), connect=cut_once, install=install, retry_delay=0.01,
        deadline=30,
    )  # fmt: skip
    await log.close()
    await host.stop()
    events = read_events(tmp_path / "host" / "order.log").events
    assert len(connections) >= 2
    assert [e for e in events if e.type == "member_refused"] == []
    assert replay_file(tmp_path / "host" / "order.log").state.status == "closed"


async def alice_keeps_trying(
    server: ContentServer,
    tmp_path: Path,
    room: RoomConfig,
    url: str,
    *,
    connect: Connector,
    tries: list[str],
) -> asyncio.Task[dict[str, Path]]:
    """Alice's join of ``room`` at ``url`` through ``connect`` (which appends to ``tries``),
    once it has tried three times and is still going: not given up, not dead."""
    joining = asyncio.create_task(
        join(
            url,
            room=room,
            user_id="alice",
            key=insecure_key("alice"),
            config=match_lock(server, ("ok",)),
            dest=tmp_path / "cache",
            connect=connect,
            retry_delay=0.02,
            deadline=60,
        )
    )
    while len(tries) < 3 and not joining.done():
        await asyncio.sleep(0.02)
    assert not joining.done(), joining.exception()  # still asking, not dead
    return joining


async def test_a_member_asks_the_lan_again_until_a_host_answers(
    server: ContentServer, tmp_path: Path
) -> None:
    """Issue 9.5 on ``lan://``: nobody answering discovery (the host is restarting) is a reason
    to ask again, not to give up."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        discovery: int = probe.getsockname()[1]
    asked: list[str] = []

    async def connect(url: str) -> Connection:
        asked.append(url)
        return await open_connection(
            url, discovery_port=discovery, discovery_address="127.0.0.1", discovery_timeout=0.1
        )

    room = signed_room("lan-retry", ("alice",), dict(ROOM.content))
    joining = await alice_keeps_trying(
        server, tmp_path, room, "lan://lan-retry", connect=connect, tries=asked
    )
    host = RoomHost(tmp_path / "host")
    await host.start()
    lan = await serve_lan(host, "127.0.0.1", 0, announce=("lan-retry",), discovery_port=discovery)
    folders = await joining
    await lan.close()
    await host.stop()
    assert set(folders) == {"chars/kfm", "stages/dojo"}


async def test_a_member_whose_last_connection_the_host_still_holds_joins_again_later(
    server: ContentServer, tmp_path: Path
) -> None:
    """A restarted member often comes back before the host noticed its old connection die:
    ``already-connected`` only delays it."""
    host = RoomHost(tmp_path / "host")
    await host.start()
    room = signed_room("again", ("alice",), dict(ROOM.content))
    plain = memory_connector(host)
    old = await plain("memory://")  # alice's previous process, not yet noticed gone
    previous = ClientProtocol(room, "alice", insecure_key("alice"))
    old.send_nowait(previous.hello())
    while previous.phase != "joined":
        for frame in previous.receive(await old.recv()).sends:
            old.send_nowait(frame)
    tries: list[str] = []

    async def connect(url: str) -> Any:
        tries.append(url)
        return await plain(url)

    joining = await alice_keeps_trying(
        server, tmp_path, room, "memory://", connect=connect, tries=tries
    )
    await old.close()
    assert set(await joining) == {"chars/kfm", "stages/dojo"}
    await host.stop()


async def test_a_member_whose_log_holds_the_close_finishes_without_any_host(
    server: ContentServer, tmp_path: Path
) -> None:
    """Killed after it heard its room close, a member restarts to find nobody hosting (the
    player who hosted it has left): its own log says the room is over, so it only checks its
    cache and returns the same folders."""
    room = signed_room("over", ("alice",), dict(ROOM.content))
    host = RoomHost(tmp_path / "host")
    await host.start()
    options: dict[str, Any] = dict(
        room=room, user_id="alice", key=insecure_key("alice"), config=match_lock(server, ("ok",)),
        dest=tmp_path / "cache", log_path=tmp_path / "alice.log", deadline=30,
    )  # fmt: skip
    first = await join("memory://", connect=memory_connector(host), **options)
    await host.stop()

    async def nobody(url: str) -> Connection:
        raise ConnectionRefusedError(f"nobody listens at {url}")

    assert await join("memory://", connect=nobody, **options) == first
