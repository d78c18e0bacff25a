"""Text messages over the websocket transport: a host frames its own (every length a header
can say), and a message that is not UTF-8 reaches the room protocol as its bytes, which refuses
it as it refuses any frame that is not its JSON (as over TCP)."""

from __future__ import annotations

import json

from websockets.asyncio.client import connect

from matchlock.app.hosting import RoomHost
from matchlock.core import protocol as pr
from matchlock.transport.ws import serve_ws
from tests.transport.contract import Accepting


def json_of(size: int) -> bytes:
    """A JSON object frame of exactly ``size`` bytes."""
    return b'{"x":"' + b"a" * (size - 8) + b'"}'


async def test_a_host_frames_text_of_every_header_length_in_order() -> None:
    accepting = Accepting()
    server = await serve_ws(accepting, "127.0.0.1", 0)
    sizes = [9, 125, 126, 127, 65535, 65536, 200_000]
    data = pr.data_frame(3, 0, b"\xff" * 300)
    try:
        async with connect(server.url, compression=None, max_size=None) as raw:
            conn = await accepting.next()
            for size in sizes[:3]:
                conn.send_nowait(json_of(size))
            conn.send_nowait(data)  # a binary message leaves after the text queued before it
            for size in sizes[3:]:
                conn.send_nowait(json_of(size))
            got = [await raw.recv() for _ in range(len(sizes) + 1)]
            texts = [json_of(size).decode() for size in sizes]
            assert got == [*texts[:3], data, *texts[3:]]
    finally:
        accepting.released.set()
        await server.close()


async def test_a_text_message_that_is_not_utf8_is_refused_by_the_room_protocol() -> None:
    host = RoomHost()
    await host.start()
    server = await serve_ws(host, "127.0.0.1", 0)
    try:
        async with connect(server.url, compression=None) as raw:
            await raw.send(b'{"type":"hello\xff"}', text=True)
            refused = json.loads(await raw.recv())
            assert (refused["type"], refused["code"]) == ("refused", "malformed-json")
    finally:
        await server.close()
        await host.stop()
