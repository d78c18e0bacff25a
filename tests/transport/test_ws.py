"""The websocket transport beyond the contract: JSON as text, data frames as binary messages,
no compression."""

from __future__ import annotations

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from matchlock.core import protocol as pr
from matchlock.transport.ws import connect_ws, serve_ws
from tests.transport.contract import Accepting, closes


async def test_json_goes_as_text_messages_and_other_frames_as_binary_ones() -> None:
    accepting = Accepting()
    server = await serve_ws(accepting, "127.0.0.1", 0)
    data = pr.data_frame(7, 0, b"{\n\x00" * 100)
    try:
        async with connect(server.url, compression=None) as raw:
            conn = await accepting.next()
            conn.send_nowait(b'{"type":"cut"}')
            conn.send_nowait(data)
            assert await raw.recv() == '{"type":"cut"}'  # str: a text message
            assert await raw.recv() == data  # bytes: a binary message, unchanged
            await raw.send(data)
            await raw.send('{"after":1}')
            assert await conn.recv() == data
            assert await conn.recv() == b'{"after":1}'
    finally:
        accepting.released.set()
        await server.close()


async def test_the_server_does_not_compress() -> None:
    accepting = Accepting()
    server = await serve_ws(accepting, "127.0.0.1", 0)
    try:
        async with connect(server.url) as raw:  # offers permessage-deflate
            assert raw.response is not None
            assert "Sec-WebSocket-Extensions" not in raw.response.headers
            assert raw.protocol.extensions == []
    finally:
        accepting.released.set()
        await server.close()


async def test_the_client_does_not_offer_compression() -> None:
    offered: list[str | None] = []

    async def handler(websocket: ServerConnection) -> None:
        assert websocket.request is not None
        offered.append(websocket.request.headers.get("Sec-WebSocket-Extensions"))

    async with serve(handler, "127.0.0.1", 0) as server:  # would accept permessage-deflate
        port = next(iter(server.sockets)).getsockname()[1]
        client = await connect_ws(f"ws://127.0.0.1:{port}")
        await closes(client)
    assert offered == [None]
