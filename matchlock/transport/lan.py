"""LAN rooms: join ``lan://ROOM_ID`` without typing the host's address.

A host that serves rooms over direct TCP also answers UDP discovery on :data:`DISCOVERY_PORT`
(the datagrams and the asking side are :mod:`matchlock.transport.discovery`). Bound to the
wildcard address (the default), it hears queries on every interface, broadcast or not, and
serves and answers on IPv6 (``::``) too where the system has it, for members that find it by
link-local multicast; the system answers from the address that reaches the asker, so a host
with several interfaces is found on each network at its address there.

A host answers only well-formed queries about rooms it hosts (those it was told to announce,
and, when its handler is a :class:`RoomDirectory` such as :class:`~matchlock.app.hosting.RoomHost`,
those the handler :meth:`~RoomDirectory.holds`; a list tells only of the announced and the
handler's :meth:`~RoomDirectory.active_rooms`, neither closed, aborted nor quarantined), with
one datagram per query, never longer than the query for a list and at most 15 bytes longer
for a room (the room id it was asked about, and a port), which makes it useless for amplifying
traffic at a forged sender.

:data:`LAN` is this transport as the registry holds it: join ``lan://ROOM_ID``; host with
``lan://ROOM_ID[?port=7500&bind=0.0.0.0]``, which serves direct TCP on ``port`` (default
:data:`LAN_PORT`) and answers discovery for ROOM_ID. Like every transport, this never looks
inside a room frame; the frames travel over :mod:`matchlock.transport.tcp`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Collection, Sequence
from typing import Any, Protocol, cast, runtime_checkable
from urllib.parse import parse_qsl

from pydantic import TypeAdapter, ValidationError

from matchlock.core.config import SafeName
from matchlock.transport.base import ConnectOptions, ListenOptions, RoomURL
from matchlock.transport.discovery import (
    DISCOVERY_PORT,
    MIN_LIST_QUERY_BYTES,
    NoHostFound,
    decode_datagram,
    discover,
    encode_datagram,
)
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
    "LAN",
    "LAN_PORT",
    "DiscoveryAnswerer",
    "LanServer",
    "LanTransport",
    "NoHostFound",
    "RoomDirectory",
    "connect_lan",
    "discover",
    "serve_lan",
]

logger = logging.getLogger(__name__)

LAN_PORT = 7500
"""The TCP port a ``lan://`` host listens on unless ``?port=`` says otherwise (Ikemen GO's)."""

_ROOM_ID: TypeAdapter[str] = TypeAdapter(SafeName)


@runtime_checkable
class RoomDirectory(Protocol):
    """A handler that can say which rooms it holds (a :class:`~matchlock.app.hosting.RoomHost`)."""

    def holds(self, room_id: str) -> bool:
        """Whether a member looking for ``room_id`` should be told it is here."""

    def active_rooms(self) -> list[str]:
        """The rooms worth listing to players looking for one."""


class DiscoveryAnswerer(asyncio.DatagramProtocol):
    """The host's side: answers queries about hosted rooms with the rooms' TCP port."""

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
        return isinstance(self._host, RoomDirectory) and self._host.holds(room_id)

    def listed(self) -> list[str]:
        """The rooms a list query is told about, in order: those announced, and the handler's
        active rooms (neither closed, aborted nor quarantined)."""
        rooms = set(self._announce)
        if isinstance(self._host, RoomDirectory):
            rooms.update(self._host.active_rooms())
        return sorted(rooms)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the socket to answer on."""
        # a datagram endpoint's transport (the selector loop's does not subclass the ABC)
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        """Answer a well-formed query about hosted rooms; ignore everything else."""
        query = decode_datagram(data)
        if query is None or self._transport is None:
            return
        answer = self._answer(query, len(data))
        if answer is not None:
            self._transport.sendto(answer, addr)
            logger.debug("answered %s: %s", addr, answer)

    def _answer(self, query: dict[str, Any], size: int) -> bytes | None:
        room_id = query.get("query")
        if isinstance(room_id, str) and self.hosts(room_id):
            return encode_datagram({"room_id": room_id, "port": self._tcp_port})
        after = query.get("after")
        if query.get("list") is not True or not isinstance(after, str):
            return None
        if size < MIN_LIST_QUERY_BYTES:
            return None
        return self._page([room for room in self.listed() if room > after], size)

    def _page(self, rooms: list[str], size: int) -> bytes:
        """The rooms that fit in ``size`` bytes (room ids are short: at least one always fits)."""
        page: list[str] = []
        for room in rooms:
            fields = {"port": self._tcp_port, "rooms": [*page, room], "more": True}
            if len(encode_datagram(fields)) > size:
                break
            page.append(room)
        more = len(page) < len(rooms)
        return encode_datagram({"port": self._tcp_port, "rooms": page, "more": more})


async def connect_lan(
    room_id: str,
    *,
    timeout: float = 3.0,
    discovery_port: int = DISCOVERY_PORT,
    discovery_address: str | None = None,
) -> TcpConnection:
    """Find a host of ``room_id`` with :func:`discover`, then connect to it over TCP at the
    address that answered."""
    ip, port = await discover(room_id, timeout, discovery_port, discovery_address)
    logger.info("room %s is hosted at %s", room_id, format_url("tcp", ip, port))
    return await connect_tcp(ip, port)


class LanServer:
    """Direct TCP servers plus their discovery answerers (from :func:`serve_lan`)."""

    def __init__(
        self,
        tcp: Sequence[TcpServer],
        udp: Sequence[asyncio.DatagramTransport],
        announce: Collection[str],
    ) -> None:
        """Own listening TCP servers (IPv4 first) and the UDP sockets answering for them."""
        self.tcp = tcp[0]
        self._servers = tuple(tcp)
        self._udp = tuple(udp)
        self._announce = tuple(announce)

    @property
    def address(self) -> tuple[str, int]:
        """The TCP address really bound (host, port)."""
        return self.tcp.address

    @property
    def discovery_address(self) -> tuple[str, int]:
        """The UDP address discovery queries are answered on (host, port)."""
        name = self._udp[0].get_extra_info("sockname")
        return str(name[0]), int(name[1])

    @property
    def url(self) -> str:
        """``lan://ROOM_ID`` for the first announced room, else the TCP URL."""
        return f"lan://{self._announce[0]}" if self._announce else self.tcp.url

    async def close(self) -> None:
        """Stop answering, then close the TCP servers and their connections."""
        for udp in self._udp:
            udp.close()
        for server in self._servers:
            await server.close()


async def _also_ipv6(
    host: ConnectionHandler,
    max_backlog: int,
    tcp_port: int,
    discovery_port: int,
    answerer: Callable[[], DiscoveryAnswerer],
) -> tuple[list[TcpServer], list[asyncio.DatagramTransport]]:
    """TCP and discovery on ``::`` too, for members that find us by IPv6 link-local; nothing
    (logged) where the system has no IPv6 or the ports are taken there."""
    tcp = TcpServer(host, max_backlog)
    try:
        await tcp.start("::", tcp_port)
    except OSError as error:
        logger.info("not serving LAN rooms over IPv6: %s", error)
        return [], []
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        # IPv6 only: the IPv4 wildcard socket on the same port answers IPv4
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(("::", discovery_port))
        udp, _ = await asyncio.get_running_loop().create_datagram_endpoint(answerer, sock=sock)
    except OSError as error:
        sock.close()
        logger.info("not answering LAN discovery over IPv6: %s", error)
        await tcp.close()
        return [], []
    return [tcp], [udp]


async def serve_lan(
    host: ConnectionHandler,
    bind_host: str = "0.0.0.0",
    port: int = LAN_PORT,
    *,
    announce: Collection[str] = (),
    discovery_port: int = DISCOVERY_PORT,
    max_backlog: int = MAX_BACKLOG_BYTES,
) -> LanServer:
    """Serve direct TCP on ``bind_host:port`` and answer discovery on ``bind_host:
    discovery_port``/udp for the rooms in ``announce`` and those ``host`` holds. The default,
    ``0.0.0.0``, hears broadcasts on every interface (a socket bound to one address does not),
    and also serves and answers on ``::`` (IPv6) where the system has it."""
    tcp = TcpServer(host, max_backlog)
    await tcp.start(bind_host, port)
    loop = asyncio.get_running_loop()

    def answerer() -> DiscoveryAnswerer:
        return DiscoveryAnswerer(host, tcp.address[1], announce)

    try:
        udp, _ = await loop.create_datagram_endpoint(
            answerer, local_addr=(bind_host, discovery_port)
        )
    except OSError:
        await tcp.close()
        raise
    servers, sockets = [tcp], [udp]
    if bind_host == "0.0.0.0":
        bound = int(udp.get_extra_info("sockname")[1])
        more_tcp, more_udp = await _also_ipv6(host, max_backlog, tcp.address[1], bound, answerer)
        servers += more_tcp
        sockets += more_udp
    server = LanServer(servers, sockets, announce)
    where = format_url("udp", *server.discovery_address)
    logger.info("answering discovery for %s on %s", list(announce) or "hosted rooms", where)
    return server


def _room_id(url: RoomURL) -> str:
    """ROOM_ID of ``lan://ROOM_ID`` (taken as written: room ids are case-sensitive)."""
    netloc = url.parts.netloc
    try:
        room_id = _ROOM_ID.validate_python(netloc)
    except ValidationError:
        raise url.bad(f"{netloc!r} is not a room id (letters, digits, _ . -)") from None
    if url.parts.path not in ("", "/"):
        raise url.bad("use lan://ROOM_ID")
    return room_id


def _listen_options(url: RoomURL) -> tuple[str, int]:
    """``bind`` and ``port`` from the query of a ``lan://`` URL to listen on."""
    query = url.parts.query
    try:
        options = dict(parse_qsl(query, strict_parsing=bool(query)))
        port = int(options.pop("port", LAN_PORT))
    except ValueError as error:
        raise url.bad(f"bad query: {error}") from None
    bind = options.pop("bind", "0.0.0.0")
    if options:
        raise url.bad(f"unknown option(s) {sorted(options)}; only port and bind")
    if not 0 <= port < 65536:
        raise url.bad(f"port {port} is not 0-65535")
    return bind, port


class LanTransport:
    """``lan://ROOM_ID``: find the room's host by discovery, or host it (see the module docs)."""

    async def connect(self, url: RoomURL, options: ConnectOptions) -> TcpConnection:
        """Find a host of the room within ``options.discovery_timeout`` (asking at
        ``options.discovery_address``, or every network when None) and connect to it."""
        room_id = _room_id(url)
        if url.parts.query:
            raise url.bad("options after lan://ROOM_ID are for hosting, not joining")
        return await connect_lan(
            room_id,
            timeout=options.discovery_timeout,
            discovery_port=options.discovery_port,
            discovery_address=options.discovery_address,
        )

    async def listen(
        self, url: RoomURL, host: ConnectionHandler, options: ListenOptions
    ) -> LanServer:
        """Serve ``host`` over direct TCP and answer discovery for the room on
        ``options.discovery_port``."""
        room_id = _room_id(url)
        bind, port = _listen_options(url)
        return await serve_lan(
            host, bind, port, announce=(room_id,), discovery_port=options.discovery_port
        )


LAN = LanTransport()
"""The LAN transport, registered for ``lan``."""
