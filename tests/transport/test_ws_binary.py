"""Binary messages written without ``websockets``' serialiser (:mod:`matchlock.transport.wsbinary`)
are what a strict websocket peer expects, at every length encoding, from both sides: masked by a
client (a server refuses an unmasked frame), unmasked by a server (a client refuses a masked one),
and after the text frames queued before them."""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from matchlock.core.protocol import MAX_MESSAGE_BYTES
from matchlock.transport.ws import connect_ws, serve_ws
from matchlock.transport.wsbinary import binary_message
from tests.transport.contract import Accepting

LENGTHS = [1, 125, 126, 65535, 65536, 512 * 1024 + 13]
"""Each side of each boundary of the 7, 16 and 64-bit lengths, and a whole data frame."""


@pytest.mark.parametrize("length", LENGTHS)
async def test_a_server_writes_unmasked_binary_messages_a_client_reads(length: int) -> None:
    data = (b"\x01" + bytes(range(256)) * (length // 256 + 1))[:length]
    accepting = Accepting()
    server = await serve_ws(accepting, "127.0.0.1", 0)
    try:
        async with connect(server.url, compression=None, max_size=None) as raw:
            conn = await accepting.next()
            conn.send_nowait(b'{"before":1}')  # queued for the end of the loop's turn
            conn.send_nowait(data)  # written at once, after it
            conn.send_nowait(b'{"after":1}')
            assert await raw.recv() == '{"before":1}'
            assert await raw.recv() == data
            assert await raw.recv() == '{"after":1}'
    finally:
        accepting.released.set()
        await server.close()


@pytest.mark.parametrize("length", LENGTHS)
async def test_a_client_writes_masked_binary_messages_a_server_reads(length: int) -> None:
    data = (b"\x01" + bytes(range(256)) * (length // 256 + 1))[:length]
    got: asyncio.Queue[str | bytes] = asyncio.Queue()

    async def handler(websocket: ServerConnection) -> None:
        async for message in websocket:
            await got.put(message)

    async with serve(handler, "127.0.0.1", 0, compression=None, max_size=MAX_MESSAGE_BYTES) as srv:
        port = next(iter(srv.sockets)).getsockname()[1]
        client = await connect_ws(f"ws://127.0.0.1:{port}")
        try:
            client.send_nowait(b'{"before":1}')
            client.send_nowait(data)
            assert await got.get() == '{"before":1}'
            assert await got.get() == data
        finally:
            await client.close()


def test_each_client_message_has_a_new_mask_key() -> None:
    data = bytes(1000)
    (first_header, first), (second_header, second) = (
        binary_message(data, masked=True) for _ in range(2)
    )
    assert first_header[:2] == second_header[:2] == b"\x82\xfe"  # final, binary; masked, 16-bit
    assert first_header[4:] != second_header[4:] and first != second
    assert binary_message(data, masked=False) == (b"\x82\x7e\x03\xe8", data)
