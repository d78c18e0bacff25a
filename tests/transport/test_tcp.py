"""Direct TCP beyond the contract: framing rules and the slow-consumer bound."""

from __future__ import annotations

import asyncio

import pytest

from matchlock.errors import UsageError
from matchlock.transport import Connection
from matchlock.transport.limits import ConnectionLimiter
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
