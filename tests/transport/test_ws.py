"""The websocket transport beyond the contract: text only, no compression, slow consumers."""

from __future__ import annotations

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from matchlock.transport.ws import connect_ws, serve_ws
from tests.transport.contract import Accepting, closes


async def test_a_binary_message_closes_the_connection() -> None:
    accepting = Accepting()
    server = await serve_ws(accepting, "127.0.0.1", 0)
    try:
        async with connect(server.url, compression=None) as raw:
            await raw.send(b'{"type":"hello"}')
            await raw.send('{"after":1}')
            assert await closes(await accepting.next()) == []
            await raw.wait_closed()
            assert raw.close_code == 1003
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
