"""LAN discovery on loopback: who answers, about what, and what is ignored."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from matchlock.client import ClientProtocol
from matchlock.hosting import RoomHost
from matchlock.testing import insecure_key, pinned, signed_room
from matchlock.transport.lan import LanServer, NoHostFound, discover, serve_lan
from matchlock.transport.tcp import connect_tcp
from tests.transport.contract import Accepting


@pytest.fixture
async def lan(tmp_path: Path) -> AsyncIterator[tuple[RoomHost, LanServer]]:
    host = RoomHost(tmp_path)
    await host.start()
    server = await serve_lan(host, "127.0.0.1", 0, announce=("announced",), discovery_port=0)
    try:
        yield host, server
    finally:
        await host.stop()
        await server.close()


class Datagrams(asyncio.DatagramProtocol):
    """A raw UDP socket's received datagrams."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.received.put_nowait(data)


async def test_an_announced_room_is_found(lan: tuple[RoomHost, LanServer]) -> None:
    _, server = lan
    found = await discover("announced", 2.0, server.discovery_address[1], "127.0.0.1")
    assert found == ("127.0.0.1", server.address[1])


async def test_a_room_the_host_holds_is_found(lan: tuple[RoomHost, LanServer]) -> None:
    host, server = lan
    config = signed_room("opened-later", ["ann", "ben"], pinned({"chars/kfm": 10}))
    member = ClientProtocol(config, "ann", insecure_key("ann"))
    conn = await connect_tcp(*server.address)
    conn.send_nowait(member.hello())
    conn.send_nowait(member.receive(await conn.recv()).sends[0])  # answer the challenge
    await conn.recv()  # the welcome: ann proved who she is, so the room is open on the host
    assert "opened-later" in host.core.rooms
    found = await discover("opened-later", 2.0, server.discovery_address[1], "127.0.0.1")
    assert found == ("127.0.0.1", server.address[1])
    await conn.close()


async def test_nobody_answers_about_a_room_not_hosted(lan: tuple[RoomHost, LanServer]) -> None:
    _, server = lan
    with pytest.raises(NoHostFound, match="'elsewhere'"):
        await discover("elsewhere", 0.3, server.discovery_address[1], "127.0.0.1")


GARBAGE = [
    b"not json",
    b"\xff\xfe",
    b"[1, 2]",
    json.dumps({"matchlock": 2, "query": "announced"}).encode(),
    json.dumps({"matchlock": 1, "query": ["announced"]}).encode(),
    json.dumps({"matchlock": 1, "room_id": "announced", "port": 1}).encode(),  # an answer
    json.dumps({"matchlock": 1, "query": "announced", "pad": "x" * 2000}).encode(),
]


async def test_anything_but_a_query_gets_no_answer() -> None:
    server = await serve_lan(Accepting(), "127.0.0.1", 0, announce=("announced",), discovery_port=0)
    loop = asyncio.get_running_loop()
    transport, socket = await loop.create_datagram_endpoint(
        Datagrams, remote_addr=server.discovery_address
    )
    try:
        for datagram in GARBAGE:
            transport.sendto(datagram)
        transport.sendto(json.dumps({"matchlock": 1, "query": "announced"}).encode())
        async with asyncio.timeout(2):  # loopback keeps the order: garbage would answer first
            answer = json.loads(await socket.received.get())
        assert answer == {"matchlock": 1, "room_id": "announced", "port": server.address[1]}
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await socket.received.get()
    finally:
        transport.close()
        await server.close()
