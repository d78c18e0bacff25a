"""LAN discovery: join ``lan://ROOM_ID`` without typing the host's address.

A host that serves rooms over direct TCP also answers UDP discovery queries. A client
broadcasts ``{"matchlock": 1, "query": ROOM_ID}`` to :data:`DISCOVERY_PORT`; every host of that
room answers, unicast to the asker, ``{"matchlock": 1, "room_id": ROOM_ID, "port": TCP_PORT}``;
the client connects over TCP to the address the first answer came from. Nothing secret travels:
joining still takes the signed config and the challenge. A host answers only about rooms it
hosts (those its :class:`~matchlock.hosting.RoomHost` holds and those it was told to announce),
never answers a datagram that is not a well-formed query, and answers with barely more bytes
than it was sent, which makes it useless for amplifying traffic at a forged sender. Discovery
is IPv4 (broadcast has no IPv6 equivalent short of multicast).

The query is re-sent every :data:`RESEND_INTERVAL` seconds until an answer arrives (UDP may drop
it). The discovery port and the address queried are parameters, so tests stay on 127.0.0.1.

Like every transport, this never looks inside a room frame; the frames travel over
:mod:`matchlock.transport.tcp`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Collection
from typing import Any, cast

from matchlock.errors import InputError
from matchlock.hosting import RoomHost
from matchlock.transport.tcp import (
    MAX_BACKLOG_BYTES,
    ConnectionHandler,
    TcpConnection,
    TcpServer,
    connect_tcp,
    format_url,
)

__all__ = [
    "DISCOVERY_PORT",
    "MAX_DATAGRAM_BYTES",
    "RESEND_INTERVAL",
    "DiscoveryAnswerer",
    "LanServer",
    "NoHostFound",
    "connect_lan",
    "discover",
    "serve_lan",
]

logger = logging.getLogger(__name__)

DISCOVERY_PORT = 7501
"""UDP port hosts answer discovery queries on (next to Ikemen GO's netplay TCP port 7500)."""

MAX_DATAGRAM_BYTES = 1024
"""Larger discovery datagrams are ignored unread."""

RESEND_INTERVAL = 0.5
"""Seconds between repeats of an unanswered discovery query."""

_VERSION = 1


class NoHostFound(InputError):
    """No host of the room answered discovery in time."""

    def __init__(self, room_id: str, address: str, port: int, timeout: float) -> None:
        """Record what was asked, where, and for how long."""
        self.room_id = room_id
        super().__init__(
            f"no host of room {room_id!r} answered on {address}:{port}/udp within {timeout:g} s "
            "(is the host on this network, and is its discovery port open?)"
        )


def _decode(data: bytes) -> dict[str, Any] | None:
    """A discovery datagram as a JSON object of our version, or None for anything else."""
    if len(data) > MAX_DATAGRAM_BYTES:
        return None
    try:
        found = json.loads(data)
    except ValueError:  # invalid JSON or UTF-8
        return None
    if not isinstance(found, dict) or found.get("matchlock") != _VERSION:
        return None
    return found


class DiscoveryAnswerer(asyncio.DatagramProtocol):
    """The host's side: answers a query about a hosted room with the room's TCP port."""

    def __init__(self, host: ConnectionHandler, tcp_port: int, announce: Collection[str]) -> None:
        """Answer for ``announce`` and, when ``host`` is a RoomHost, every room it holds."""
        self._host = host
        self._tcp_port = tcp_port
        self._announce = frozenset(announce)
        self._transport: asyncio.DatagramTransport | None = None

    def hosts(self, room_id: str) -> bool:
        """Whether a query about ``room_id`` gets an answer."""
        if room_id in self._announce:
            return True
        return isinstance(self._host, RoomHost) and room_id in self._host.core.rooms

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the socket to answer on."""
        # a datagram endpoint's transport (the selector loop's does not subclass the ABC)
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        """Answer a well-formed query about a hosted room; ignore everything else."""
        query = _decode(data)
        room_id = None if query is None else query.get("query")
        if not isinstance(room_id, str) or not self.hosts(room_id) or self._transport is None:
            return
        answer = {"matchlock": _VERSION, "room_id": room_id, "port": self._tcp_port}
        self._transport.sendto(json.dumps(answer).encode(), addr)
        logger.debug("told %s that room %s is on port %d", addr, room_id, self._tcp_port)


class _Asker(asyncio.DatagramProtocol):
    """The client's side: waits for the first valid answer about one room."""

    def __init__(self, room_id: str) -> None:
        self.room_id = room_id
        self.found: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        answer = _decode(data)
        if answer is None or answer.get("room_id") != self.room_id or self.found.done():
            return
        port = answer.get("port")
        if isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536:
            self.found.set_result((str(addr[0]), port))

    def error_received(self, exc: Exception) -> None:
        logger.debug("discovery: %s", exc)  # e.g. ICMP port unreachable: keep waiting


async def discover(
    room_id: str,
    timeout: float = 3.0,
    port: int = DISCOVERY_PORT,
    address: str = "255.255.255.255",
) -> tuple[str, int]:
    """Ask ``address:port`` (the local broadcast address by default) who hosts ``room_id``;
    returns the (ip, TCP port) of the first answer, or raises :class:`NoHostFound`."""
    loop = asyncio.get_running_loop()
    transport, asker = await loop.create_datagram_endpoint(
        lambda: _Asker(room_id), local_addr=("0.0.0.0", 0), allow_broadcast=True
    )
    query = json.dumps({"matchlock": _VERSION, "query": room_id}).encode()
    try:
        async with asyncio.timeout(timeout):
            while True:
                transport.sendto(query, (address, port))
                done, _ = await asyncio.wait({asker.found}, timeout=RESEND_INTERVAL)
                if done:
                    return asker.found.result()
    except TimeoutError:
        raise NoHostFound(room_id, address, port, timeout) from None
    finally:
        transport.close()


async def connect_lan(
    room_id: str,
    *,
    timeout: float = 3.0,
    discovery_port: int = DISCOVERY_PORT,
    discovery_address: str = "255.255.255.255",
) -> TcpConnection:
    """Find a host of ``room_id`` with :func:`discover`, then connect to it over TCP."""
    ip, port = await discover(room_id, timeout, discovery_port, discovery_address)
    logger.info("room %s is hosted at %s:%d", room_id, ip, port)
    return await connect_tcp(ip, port)


class LanServer:
    """A direct TCP server plus its discovery answerer (from :func:`serve_lan`)."""

    def __init__(
        self, tcp: TcpServer, udp: asyncio.DatagramTransport, announce: Collection[str]
    ) -> None:
        """Own a listening TCP server and the UDP socket answering for it."""
        self.tcp = tcp
        self._udp = udp
        self._announce = tuple(announce)

    @property
    def address(self) -> tuple[str, int]:
        """The TCP address really bound (host, port)."""
        return self.tcp.address

    @property
    def discovery_address(self) -> tuple[str, int]:
        """The UDP address discovery queries are answered on (host, port)."""
        name = self._udp.get_extra_info("sockname")
        return str(name[0]), int(name[1])

    @property
    def url(self) -> str:
        """``lan://ROOM_ID`` for the first announced room, else the TCP URL."""
        return f"lan://{self._announce[0]}" if self._announce else self.tcp.url

    async def close(self) -> None:
        """Stop answering, then close the TCP server and its connections."""
        self._udp.close()
        await self.tcp.close()


async def serve_lan(
    host: ConnectionHandler,
    bind_host: str = "0.0.0.0",
    port: int = 7500,
    *,
    announce: Collection[str] = (),
    discovery_port: int = DISCOVERY_PORT,
    max_backlog: int = MAX_BACKLOG_BYTES,
) -> LanServer:
    """Serve direct TCP on ``bind_host:port`` and answer discovery on ``bind_host:
    discovery_port``/udp for the rooms in ``announce`` and those ``host`` holds. Bind to
    ``0.0.0.0`` to hear broadcasts from the network (a socket bound to one address does not)."""
    tcp = TcpServer(host, max_backlog)
    await tcp.start(bind_host, port)
    loop = asyncio.get_running_loop()
    try:
        udp, _ = await loop.create_datagram_endpoint(
            lambda: DiscoveryAnswerer(host, tcp.address[1], announce),
            local_addr=(bind_host, discovery_port),
        )
    except OSError:
        await tcp.close()
        raise
    server = LanServer(tcp, udp, announce)
    where = format_url("udp", *server.discovery_address)
    logger.info("answering discovery for %s on %s", list(announce) or "hosted rooms", where)
    return server
