"""Direct TCP's binary frames on the wire: ``0x00``, a u32 big-endian length, the frame; JSON
lines and keepalives around them unchanged."""

from __future__ import annotations

import asyncio

from matchlock.core import protocol as pr
from matchlock.transport.tcp import connect_tcp, serve_tcp
from tests.transport.contract import Accepting, closes


async def test_a_data_frame_goes_out_as_the_mark_its_length_and_its_bytes() -> None:
    accepting = Accepting()
    server = await serve_tcp(accepting, "127.0.0.1", 0)
    frame = pr.data_frame(1, 6, b"world")
    try:
        reader, writer = await asyncio.open_connection(*server.address)
        host_end = await accepting.next()
        host_end.send_nowait(b'{"type":"cut"}')
        host_end.send_nowait(frame)
        host_end.send_nowait(b"{}")
        expected = b'{"type":"cut"}\n' + b"\x00\x00\x00\x00\x12" + frame + b"{}\n"
        async with asyncio.timeout(5):
            assert await reader.readexactly(len(expected)) == expected
        writer.close()
    finally:
        accepting.released.set()
        await server.close()


async def test_binary_frames_read_from_the_wire_among_lines_and_keepalives() -> None:
    accepting = Accepting()
    server = await serve_tcp(accepting, "127.0.0.1", 0)
    frame = pr.data_frame(2, 0, b"\n\n\x00{")  # newlines and marks inside are payload
    try:
        _, writer = await asyncio.open_connection(*server.address)
        length = len(frame).to_bytes(4, "big")
        writer.write(b'{"a":1}\n\n\x00' + length + frame + b"\n\x00" + length + frame + b"{}\n")
        writer.close()
        assert await closes(await accepting.next()) == [b'{"a":1}', frame, frame, b"{}"]
    finally:
        accepting.released.set()
        await server.close()


async def test_a_member_and_its_host_exchange_binary_frames() -> None:
    accepting = Accepting()
    server = await serve_tcp(accepting, "127.0.0.1", 0)
    try:
        client = await connect_tcp(*server.address)
        host_end = await accepting.next()
        frame = pr.data_frame(3, 0, bytes(range(256)))
        host_end.send_nowait(frame)
        async with asyncio.timeout(5):
            assert await client.recv() == frame
        client.send_nowait(frame)
        async with asyncio.timeout(5):
            assert await host_end.recv() == frame
        await client.close()
    finally:
        accepting.released.set()
        await server.close()
