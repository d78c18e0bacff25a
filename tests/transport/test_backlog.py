"""Slow consumers: a stalled peer is dropped, a peer reading a big welcome is not (ws and tcp)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from matchlock.transport import Connection, ConnectionClosed
from matchlock.transport.tcp import Backlog, ConnectionHandler, connect_tcp, serve_tcp
from matchlock.transport.ws import connect_ws, serve_ws
from tests.transport.contract import Accepting, closes, frame_of

LIMIT = 256 << 10


def test_a_backlog_over_the_limit_is_too_slow() -> None:
    backlog = Backlog(100)
    assert not backlog.exceeded(100, 10)
    assert backlog.exceeded(101, 10)


def test_a_large_frame_is_allowed_until_it_has_been_read() -> None:
    backlog = Backlog(100)
    assert not backlog.exceeded(0, 1_000)  # a welcome: allowed up to 0 + 1,000 + 100
    assert not backlog.exceeded(1_050, 10)  # frames behind it while it is read
    assert backlog.exceeded(1_101, 10)  # the peer is not reading it
    backlog = Backlog(100)
    backlog.exceeded(0, 1_000)
    assert not backlog.exceeded(40, 10)  # read: back to the plain limit
    assert backlog.exceeded(101, 10)


@dataclass
class Pair:
    client: Connection
    host_end: Connection


@dataclass
class Served:
    connect: Callable[[], Awaitable[Connection]]
    close: Callable[[], Awaitable[None]]


async def open_ws(handler: ConnectionHandler) -> Served:
    server = await serve_ws(handler, "127.0.0.1", 0, max_backlog=LIMIT)

    async def connect() -> Connection:
        return await connect_ws(server.url)

    return Served(connect, server.close)


async def open_tcp(handler: ConnectionHandler) -> Served:
    server = await serve_tcp(handler, "127.0.0.1", 0, max_backlog=LIMIT)

    async def connect() -> Connection:
        return await connect_tcp(*server.address)

    return Served(connect, server.close)


@pytest.fixture(params=[open_ws, open_tcp], ids=["ws", "tcp"])
async def pair(request: pytest.FixtureRequest) -> AsyncIterator[Pair]:
    accepting = Accepting()
    served: Served = await request.param(accepting)
    try:
        client = await served.connect()
        yield Pair(client, await accepting.next())
    finally:
        accepting.released.set()
        await served.close()


async def test_a_peer_that_does_not_read_is_dropped(pair: Pair) -> None:
    frame = frame_of(64 << 10)
    with pytest.raises(ConnectionClosed, match="did not keep up"):
        for _ in range(4_000):  # 256 MiB: far beyond any loopback socket buffer
            pair.host_end.send_nowait(frame)
            await asyncio.sleep(0)
    with pytest.raises(ConnectionClosed):
        pair.host_end.send_nowait(frame)
    frames = await closes(pair.client)
    assert frames
    assert set(frames) == {frame}  # whole frames, then the end


async def test_a_peer_reading_a_big_welcome_is_kept(pair: Pair) -> None:
    welcome, relays = (
        frame_of(16 << 20, mark="w"),
        [frame_of(1_000, str(i % 10)) for i in range(300)],
    )
    received = asyncio.create_task(receive(pair.client, 1 + len(relays)))
    pair.host_end.send_nowait(welcome)
    for relay in relays:
        await asyncio.sleep(0)  # each turn writes: the backlog is the welcome's, far over LIMIT
        pair.host_end.send_nowait(relay)
    async with asyncio.timeout(10):
        assert await received == [welcome, *relays]


async def receive(conn: Connection, count: int) -> list[bytes]:
    return [await conn.recv() for _ in range(count)]
