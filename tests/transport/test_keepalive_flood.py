"""A flood of direct TCP keepalives (empty lines), from a hostile host and from a hostile peer.

Found by an outside tester: a host sending ``\\n`` x 65,536 in a loop held a member's event
loop at 100% of a core, past its ``--deadline`` (each keepalive was read a byte at a time, and
answered, without the loop getting a turn while they were buffered). Now more than
``MAX_KEEPALIVES`` within ``KEEPALIVE_WINDOW`` seconds close the connection, on either side.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from matchlock.transport import ConnectionClosed
from matchlock.transport.connect import open_connection
from matchlock.transport.tcp import MAX_KEEPALIVES
from tests.transport.test_reset_peers import LOOPS, stopped
from tests.transport.test_serve import join, start_serve

FLOOD = b"\n" * 65536


async def test_a_member_drops_a_host_that_floods_it_with_keepalives() -> None:
    async def flooding(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while True:
                writer.write(FLOOD)
                await writer.drain()

    server = await asyncio.start_server(flooding, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        conn = await open_connection(f"tcp://127.0.0.1:{port}")
        with pytest.raises(ConnectionClosed, match=f"over {MAX_KEEPALIVES} keepalives"):
            async with asyncio.timeout(10):
                await conn.recv()
    finally:
        server.close()


@pytest.mark.parametrize("loop", LOOPS)
async def test_a_host_drops_a_peer_that_floods_it_with_keepalives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loop: str
) -> None:
    monkeypatch.setenv("MATCHLOCK_UVLOOP", "1" if loop == "uvloop" else "0")
    process, url = await start_serve(
        "--listen", "127.0.0.1:0", "--log-dir", str(tmp_path), "--transport", "tcp"
    )  # fmt: skip
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", int(url.rsplit(":", 1)[1]))
        with contextlib.suppress(OSError):
            for _ in range(8):
                writer.write(FLOOD)
                await writer.drain()
        async with asyncio.timeout(10):
            with contextlib.suppress(OSError):
                assert await reader.read() == b""  # dropped
        writer.close()
        await join(url, "ann")  # the host goes on
    finally:
        text = await stopped(process)
    assert f"sent over {MAX_KEEPALIVES} keepalives in 10 s: disconnecting" in text, text
