"""LAN discovery, the asking side: who hosts a room, and which rooms hosts on this network
announce. The host's side is :mod:`matchlock.transport.lan`.

A member asks every network this machine is on at once (the :class:`Target` list of
:mod:`matchlock.transport.interfaces`: each IPv4 network's directed broadcast, IPv6 link-local
``ff02::1``, loopback, and ``255.255.255.255`` where it can be sent), from one socket per
address family, and re-sends every :data:`RESEND_INTERVAL` seconds (UDP may drop datagrams).
The member connects to the address the first answer came from: a host with several interfaces
answers from its address on the network it shares with the member. When nobody answers,
:class:`NoHostFound` lists every interface and address asked, and why a query could not be sent
there (no route).

Datagrams, all JSON objects with ``"matchlock": 1`` (``docs/lan.md``, ``docs/protocol.md``):

- ``{"query": ROOM_ID}`` -> ``{"room_id": ROOM_ID, "port": TCP_PORT}`` from every host of the room;
- ``{"list": true, "after": ROOM_ID, "pad": "..."}`` (at least :data:`MIN_LIST_QUERY_BYTES`) ->
  ``{"port": TCP_PORT, "rooms": [ROOM_ID, ...], "more": bool}``: the open rooms after ``after``
  in order, as many as fit in the query's own size; ``more`` says to ask that host again after
  the last one.

Nothing secret travels: room ids and a port. Everything that arrives is hostile until checked
(a datagram too long, not JSON, of another version, with a port out of range or a room id that
is not a safe name is dropped). The discovery port and the address asked are parameters, so
tests can stay on 127.0.0.1. This module never opens a TCP connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from matchlock.core.config import SafeName
from matchlock.core.errors import InputError
from matchlock.transport.base import format_url
from matchlock.transport.interfaces import Target, interface_of, local_targets

__all__ = [
    "DISCOVERY_PORT",
    "MAX_DATAGRAM_BYTES",
    "MIN_LIST_QUERY_BYTES",
    "RESEND_INTERVAL",
    "Announcement",
    "Asked",
    "NoHostFound",
    "Survey",
    "decode_datagram",
    "discover",
    "encode_datagram",
    "list_lan_rooms",
    "list_query",
    "tcp_port_of",
]

logger = logging.getLogger(__name__)

DISCOVERY_PORT = 7501
"""UDP port hosts answer discovery queries on (next to Ikemen GO's netplay TCP port 7500)."""

MAX_DATAGRAM_BYTES = 1024
"""Larger discovery datagrams are ignored unread."""

MIN_LIST_QUERY_BYTES = 512
"""A list query is answered only when it is at least this long (the answer fits in its size)."""

RESEND_INTERVAL = 0.5
"""Seconds between repeats of a discovery query."""

_VERSION = 1
_ROOM_ID: TypeAdapter[str] = TypeAdapter(SafeName)


def decode_datagram(data: bytes) -> dict[str, Any] | None:
    """A discovery datagram as a JSON object of our version, or None for anything else."""
    if len(data) > MAX_DATAGRAM_BYTES:
        return None
    try:
        found = json.loads(data)
    except (ValueError, RecursionError):  # invalid JSON or UTF-8; arrays nested too deep
        return None
    if not isinstance(found, dict) or found.get("matchlock") != _VERSION:
        return None
    return found


def encode_datagram(fields: dict[str, Any]) -> bytes:
    """``fields`` as a compact JSON datagram of our version."""
    return json.dumps({"matchlock": _VERSION, **fields}, separators=(",", ":")).encode()


def list_query(after: str) -> bytes:
    """A list query padded to :data:`MAX_DATAGRAM_BYTES`, so that its answer may be as long."""
    bare = encode_datagram({"list": True, "after": after, "pad": ""})
    pad = "." * (MAX_DATAGRAM_BYTES - len(bare))
    return encode_datagram({"list": True, "after": after, "pad": pad})


def tcp_port_of(value: object) -> int | None:
    """``value`` if it is a usable TCP port number, else None."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536:
        return value
    return None


@dataclass(frozen=True)
class Asked:
    """Where a query went: ``target``, and ``error`` (why it could not be sent, else '')."""

    target: Target
    error: str = ""

    def __str__(self) -> str:
        return f"{self.target} (not sent: {self.error})" if self.error else str(self.target)


class NoHostFound(InputError):
    """No host of the room answered discovery in time; ``asked`` says where the query went."""

    def __init__(self, room_id: str, port: int, timeout: float, asked: Sequence[Asked]) -> None:
        """Record what was asked, where, and for how long."""
        self.room_id = room_id
        self.asked = tuple(asked)
        where = "".join(f"\n  - {a}" for a in asked) or " nowhere (no network interface is up)"
        super().__init__(
            f"no host of room {room_id!r} answered within {timeout:g} s; asked on UDP port "
            f"{port}:{where}\nis the host on one of these networks, and is its UDP port "
            f"{port} open?"
        )


@dataclass(frozen=True)
class Announcement:
    """A room a host announces: its id, the host's ``address`` that answered and its TCP
    ``port``, and ``interface``, this machine's interface the answer came by ('' if unknown)."""

    room_id: str
    address: str
    port: int
    interface: str

    @property
    def url(self) -> str:
        """``tcp://ADDRESS:PORT``, to join this host directly."""
        return format_url("tcp", self.address, self.port)


@dataclass(frozen=True)
class Survey:
    """What :func:`list_lan_rooms` found: the announced ``rooms`` and where it ``asked``."""

    rooms: tuple[Announcement, ...]
    asked: tuple[Asked, ...]


_Sender = tuple[Any, ...]
"""A datagram's source, as the socket gives it: ``(host, port)``, or with IPv6 ``(host, port,
flowinfo, scope_id)``."""


def _address_of(sender: _Sender) -> str:
    """The address to connect to ``sender`` at: an IPv6 link-local one names its interface
    (``fe80::1%eth0``), without which it cannot be reached."""
    host = str(sender[0])
    if len(sender) < 4 or not sender[3] or "%" in host:
        return host
    try:
        return f"{host}%{socket.if_indextoname(sender[3])}"
    except OSError:  # an interface gone since: its index still says which one it was
        return f"{host}%{sender[3]}"


class _Answers(asyncio.DatagramProtocol):
    """Queues every well-formed datagram with its sender's address."""

    def __init__(self, queue: asyncio.Queue[tuple[dict[str, Any], _Sender]]) -> None:
        self._queue = queue

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        answer = decode_datagram(data)
        if answer is not None:
            self._queue.put_nowait((answer, tuple(addr)))

    def error_received(self, exc: Exception) -> None:
        logger.debug("discovery: %s", exc)  # e.g. ICMP port unreachable: keep waiting


class _Asking:
    """One round of discovery: a socket per address family, what was sent where, the answers.

    Sending is a plain ``sendto`` on the socket (never blocks on UDP), so that the reason a
    target cannot be reached (no route) is known per target, not just logged."""

    def __init__(self, targets: Sequence[Target], port: int) -> None:
        self.targets = tuple(targets)
        self.port = port
        self.answers: asyncio.Queue[tuple[dict[str, Any], _Sender]] = asyncio.Queue()
        self._errors: dict[Target, str] = {}
        self._sent: set[Target] = set()
        self._sockets: dict[int, socket.socket] = {}
        self._transports: list[asyncio.BaseTransport] = []

    async def open(self) -> None:
        """Open a socket for each address family the targets use."""
        loop = asyncio.get_running_loop()
        for family in sorted({t.family for t in self.targets}):
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                if family == socket.AF_INET:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                sock.bind(("0.0.0.0" if family == socket.AF_INET else "::", 0))
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _Answers(self.answers), sock=sock
                )
            except OSError as error:  # e.g. IPv6 is turned off
                sock.close()
                self._errors.update({t: str(error) for t in self.targets if t.family == family})
                continue
            self._sockets[family] = sock
            self._transports.append(transport)

    def close(self) -> None:
        """Close every socket."""
        for transport in self._transports:
            transport.close()

    def send(self, datagram: bytes, targets: Sequence[Target] | None = None) -> None:
        """Send ``datagram`` to each target (every one by default), noting what failed."""
        for target in self.targets if targets is None else targets:
            sock = self._sockets.get(target.family)
            if sock is None:
                continue
            try:
                sock.sendto(datagram, target.sockaddr(self.port))
            except OSError as error:
                self._errors[target] = str(error)
            else:
                self._sent.add(target)

    def reply(self, datagram: bytes, sender: _Sender) -> None:
        """Send ``datagram`` to the ``sender`` of an answer (a follow-up: an error is logged)."""
        sock = self._sockets[socket.AF_INET6 if len(sender) == 4 else socket.AF_INET]
        try:
            sock.sendto(datagram, sender)
        except OSError as error:
            logger.debug("discovery: cannot ask %s again: %s", sender, error)

    def asked(self) -> tuple[Asked, ...]:
        """Every target, with the last error of those no query reached."""
        return tuple(
            Asked(t, "" if t in self._sent else self._errors.get(t, "")) for t in self.targets
        )

    async def collect(
        self, datagram: bytes, seconds: float, take: Callable[[dict[str, Any], _Sender], bool]
    ) -> bool:
        """Send ``datagram`` every :data:`RESEND_INTERVAL` for up to ``seconds``, handing each
        answer and its sender to ``take``; True as soon as ``take`` returns True."""
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        next_send = loop.time()
        while (now := loop.time()) < end:
            if now >= next_send:
                self.send(datagram)
                next_send = now + RESEND_INTERVAL
            try:
                async with asyncio.timeout_at(min(next_send, end)):
                    answer, sender = await self.answers.get()
            except TimeoutError:
                continue
            if take(answer, sender):
                return True
        return False


def _targets(address: str | None) -> list[Target]:
    return local_targets() if address is None else [Target(address)]


async def discover(
    room_id: str,
    timeout: float = 3.0,
    port: int = DISCOVERY_PORT,
    address: str | None = None,
) -> tuple[str, int]:
    """Ask who hosts ``room_id``, on every network this machine is on (or only at ``address``);
    returns the (address, TCP port) of the first answer, or raises :class:`NoHostFound`."""
    asking = _Asking(_targets(address), port)
    found: list[tuple[str, int]] = []

    def take(answer: dict[str, Any], sender: _Sender) -> bool:
        tcp_port = tcp_port_of(answer.get("port"))
        if answer.get("room_id") == room_id and tcp_port is not None:
            found.append((_address_of(sender), tcp_port))
        return bool(found)

    await asking.open()
    try:
        if await asking.collect(encode_datagram({"query": room_id}), timeout, take):
            return found[0]
    finally:
        asking.close()
    raise NoHostFound(room_id, port, timeout, asking.asked())


async def list_lan_rooms(
    wait: float = 1.0, port: int = DISCOVERY_PORT, address: str | None = None
) -> Survey:
    """The rooms hosts announce, on every network this machine is on (or only at ``address``),
    gathered for ``wait`` seconds; each host and room once per address it answered from."""
    asking = _Asking(_targets(address), port)
    rooms: dict[tuple[str, str, int], Announcement] = {}

    def take(answer: dict[str, Any], sender: _Sender) -> bool:
        tcp_port, ids = tcp_port_of(answer.get("port")), answer.get("rooms")
        if tcp_port is None or not isinstance(ids, list):
            return False
        valid = [room for room in ids if _is_room_id(room)]
        address = _address_of(sender)
        via = interface_of(address, asking.targets)
        for room in valid:
            rooms.setdefault((room, address, tcp_port), Announcement(room, address, tcp_port, via))
        if answer.get("more") is True and valid:
            asking.reply(list_query(max(valid)), sender)
        return False

    await asking.open()
    try:
        await asking.collect(list_query(""), wait, take)
    finally:
        asking.close()
    return Survey(tuple(rooms[key] for key in sorted(rooms)), asking.asked())


def _is_room_id(value: object) -> bool:
    try:
        _ROOM_ID.validate_python(value)
    except ValidationError:
        return False
    return True
