"""Every transport passes the contract in :mod:`tests.transport.contract`."""

from __future__ import annotations

import asyncio

from matchlock.transport import Connection
from matchlock.transport.connect import Listener, listen, open_connection
from matchlock.transport.lan import LanServer
from matchlock.transport.memory import memory_pair
from matchlock.transport.tcp import ConnectionHandler
from tests.transport.contract import ROOM_ID, Endpoint, Frozen, TransportContract

UPGRADE = (
    "GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
"""A websocket opening request, written by hand so that nothing answers the server's pings."""


class MemoryEndpoint:
    """In-memory "server": each connect makes a pair and runs the handler on the host end."""

    def __init__(self, handler: ConnectionHandler) -> None:
        self.handler = handler
        self.tasks: set[asyncio.Task[None]] = set()

    async def connect(self) -> Connection:
        client, host_end = memory_pair()
        self.tasks.add(asyncio.create_task(self.handler.handle(host_end)))
        return client

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


class UrlEndpoint:
    """A server from :func:`listen`, joined with :func:`open_connection` on its URL."""

    def __init__(self, listener: Listener, url: str, **options: object) -> None:
        self.listener = listener
        self.url = url
        self.options = options

    async def connect(self) -> Connection:
        return await open_connection(self.url, **self.options)  # type: ignore[arg-type]

    async def close(self) -> None:
        await self.listener.close()


async def frozen_tcp(endpoint: Endpoint, upgrade: bool = False) -> Frozen:
    """A raw TCP connection to a :class:`UrlEndpoint` (made a websocket by hand with
    ``upgrade``) that then never reads nor writes."""
    assert isinstance(endpoint, UrlEndpoint)
    host, port = endpoint.listener.address
    reader, writer = await asyncio.open_connection(host, port)
    if upgrade:
        writer.write(UPGRADE.format(host=host, port=port).encode())
        async with asyncio.timeout(5):
            response = await reader.readuntil(b"\r\n\r\n")
        assert response.startswith(b"HTTP/1.1 101 "), response
    return writer


class TestMemory(TransportContract):
    enforces_frame_limit = False
    networked = False

    async def start(self, handler: ConnectionHandler) -> Endpoint:
        return MemoryEndpoint(handler)


class TestWebsocket(TransportContract):
    async def start(self, handler: ConnectionHandler) -> Endpoint:
        listener = await listen("ws://127.0.0.1:0", handler)
        assert listener.url.startswith("ws://127.0.0.1:")
        return UrlEndpoint(listener, listener.url)

    async def frozen_peer(self, endpoint: Endpoint) -> Frozen:
        return await frozen_tcp(endpoint, upgrade=True)


class TestTcp(TransportContract):
    async def start(self, handler: ConnectionHandler) -> Endpoint:
        listener = await listen("tcp://127.0.0.1:0", handler)
        assert listener.url.startswith("tcp://127.0.0.1:")
        return UrlEndpoint(listener, listener.url)

    async def frozen_peer(self, endpoint: Endpoint) -> Frozen:
        return await frozen_tcp(endpoint)


class TestLan(TransportContract):
    async def start(self, handler: ConnectionHandler) -> Endpoint:
        url = f"lan://{ROOM_ID}?port=0&bind=127.0.0.1"
        listener = await listen(url, handler, discovery_port=0)
        assert isinstance(listener, LanServer)
        assert listener.url == f"lan://{ROOM_ID}"
        return UrlEndpoint(
            listener,
            listener.url,
            discovery_port=listener.discovery_address[1],
            discovery_address="127.0.0.1",
        )

    async def frozen_peer(self, endpoint: Endpoint) -> Frozen:
        return await frozen_tcp(endpoint)
