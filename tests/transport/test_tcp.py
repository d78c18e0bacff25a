"""Direct TCP beyond the contract: framing rules, keepalives (an empty line) and closing."""

from __future__ import annotations

import asyncio

import pytest

from matchlock.core.errors import UsageError
from matchlock.transport import Connection, ConnectionClosed
from matchlock.transport.limits import ConnectionLimiter, Limits
from matchlock.transport.tcp import connect_tcp, serve_tcp
from tests.transport.contract import Accepting, closes


async def test_a_frame_holding_a_newline_is_refused_before_sending() -> None:
    accepting = Accepting()
    server = await serve_tcp(accepting, "127.0.0.1", 0)
    try:
        client = await connect_tcp(*server.address)
        with pytest.raises(UsageError, match="one line"):
            client.send_nowait(b'{"a":\n1}')
        client.send_nowait(b'{"a":1}')
        assert await (await accepting.next()).recv() == b'{"a":1}'
        await client.close()
    finally:
        accepting.released.set()
        await server.close()


async def test_a_partial_line_at_the_end_is_not_a_frame() -> None:
    accepting = Accepting()
    server = await serve_tcp(accepting, "127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection(*server.address)
        writer.write(b'{"whole":1}\n{"cut":')
        writer.close()
        assert await closes(await accepting.next()) == [b'{"whole":1}']
        assert await reader.read() == b""
    finally:
        accepting.released.set()
        await server.close()


class Reading:
    """A handler like a RoomHost's: it reads until its connection closes."""

    limiter = ConnectionLimiter()

    async def handle(self, conn: Connection) -> None:
        await closes(conn, timeout=60)


async def test_closing_the_server_closes_its_connections() -> None:
    server = await serve_tcp(Reading(), "127.0.0.1", 0)
    address = server.address
    client = await connect_tcp(*address)
    client.send_nowait(b"{}")
    async with asyncio.timeout(2):  # not CLOSE_TIMEOUT: the handler ends as its connection closes
        await server.close()
    assert await closes(client) == []
    with pytest.raises(OSError):
        await connect_tcp(*address)


# -- keepalives: an empty line ----------------------------------------------------------------


async def test_an_empty_frame_is_refused_before_sending() -> None:
    accepting = Accepting()
    server = await serve_tcp(accepting, "127.0.0.1", 0)
    try:
        client = await connect_tcp(*server.address)
        with pytest.raises(UsageError, match="keepalive"):
            client.send_nowait(b"")
        await client.close()
    finally:
        accepting.released.set()
        await server.close()


async def test_a_member_answers_each_keepalive_and_never_hands_one_up() -> None:
    answers: asyncio.Queue[bytes] = asyncio.Queue()

    async def raw_host(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b'\n\n{"a":1}\n')
        for _ in range(2):
            await answers.put(await reader.readline())
        writer.close()

    raw = await asyncio.start_server(raw_host, "127.0.0.1", 0)
    try:
        client = await connect_tcp("127.0.0.1", raw.sockets[0].getsockname()[1])
        async with asyncio.timeout(5):
            assert await client.recv() == b'{"a":1}'
            assert [await answers.get() for _ in range(2)] == [b"\n", b"\n"]
        await client.close()
    finally:
        raw.close()


async def test_a_host_keeps_a_quiet_connection_alive_and_drops_the_empty_lines_it_reads() -> None:
    accepting = Accepting(Limits(idle_timeout=1.2))
    server = await serve_tcp(accepting, "127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection(*server.address)
        writer.write(b'\n\n{"b":2}\n')
        host_end = await accepting.next()
        async with asyncio.timeout(5):
            assert await host_end.recv() == b'{"b":2}'
            for _ in range(3):  # quiet both ways: a keepalive comes, the answer keeps it open
                assert await reader.readline() == b"\n"
                writer.write(b"\n")
        host_end.send_nowait(b'{"c":3}')
        async with asyncio.timeout(5):
            assert await reader.readline() == b'{"c":3}\n'
        writer.close()
    finally:
        accepting.released.set()
        await server.close()


async def test_a_member_gives_up_on_a_host_that_says_nothing() -> None:
    async def mute_host(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the member gives up

    raw = await asyncio.start_server(mute_host, "127.0.0.1", 0)
    try:
        client = await connect_tcp("127.0.0.1", raw.sockets[0].getsockname()[1], idle_timeout=0.5)
        with pytest.raises(ConnectionClosed, match="nothing arrived"):
            async with asyncio.timeout(10):
                await client.recv()
    finally:
        raw.close()
