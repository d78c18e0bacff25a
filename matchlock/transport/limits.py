"""What one hosting process lets connections cost: deadlines, keepalives and connection caps.

A host on the open internet meets peers that connect and say nothing, say half a line, or
freeze once joined. :class:`Limits` holds the numbers (each a ``matchlock serve`` and
``matchlock join --host`` flag, defaults documented in ``docs/protocol.md``, "Timeouts and
connection limits"):

- ``handshake_timeout``: a connection must have said hello and answered the challenge within
  this many seconds of connecting, or it is closed (:meth:`matchlock.app.hosting.RoomHost.handle`
  applies it, since only the host core knows who has joined);
- ``idle_timeout``: a connection on which nothing arrived (no frame, no keepalive) for this
  long is closed by its transport; the host core records a joined member's as a disconnect.
  Keepalives (websocket ping/pong; an empty line over direct TCP) keep a quiet but alive peer
  from ever reaching it: the host sends one every :attr:`Limits.keepalive_interval` on a
  quiet connection;
- ``max_connections`` and ``max_connections_per_address``: the caps :class:`ConnectionLimiter`
  applies at accept, before a byte of the refused connection is read;
- ``max_users_per_room`` and ``max_pieces_per_room``: the biggest room config this host opens
  (the host core refuses a bigger one before checking a signature; see
  :data:`matchlock.core.host.MAX_USERS`).

One :class:`ConnectionLimiter` belongs to one :class:`~matchlock.app.hosting.RoomHost`, so every
listener serving that host (websocket, TCP, LAN) shares its caps. Refusals and timeouts concern
peers that have proved nothing: they go to the host's diagnostics (``logging`` and
:attr:`ConnectionLimiter.counts`), never to a room's log.

This module never touches a socket or a frame: transports ask it whether to accept.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from matchlock.core.errors import UsageError
from matchlock.core.host import MAX_PIECES, MAX_USERS

if TYPE_CHECKING:
    import asyncio

__all__ = [
    "CLIENT_IDLE_TIMEOUT",
    "HANDSHAKE_TIMEOUT",
    "IDLE_TIMEOUT",
    "KEEPALIVE_INTERVAL",
    "MAX_CONNECTIONS",
    "MAX_CONNECTIONS_PER_ADDRESS",
    "ConnectionLimiter",
    "Limits",
    "address_of",
]

logger = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 10.0
"""Default seconds from connecting to having joined (hello, challenge, answer)."""

IDLE_TIMEOUT = 60.0
"""Default seconds a host waits on a silent connection (no frame, no keepalive) before closing
it."""

KEEPALIVE_INTERVAL = 15.0
"""The longest a host lets a quiet connection go without a keepalive (shorter for a short idle
timeout, see :attr:`Limits.keepalive_interval`)."""

CLIENT_IDLE_TIMEOUT = 60.0
"""Seconds a member waits on a silent host before it takes the connection for dead (and
reconnects). A host sends a keepalive at least every :data:`KEEPALIVE_INTERVAL` seconds."""

MAX_CONNECTIONS = 512
"""Default cap on connections open at once to one hosting process, over every listener."""

MAX_CONNECTIONS_PER_ADDRESS = 16
"""Default cap on connections open at once from one remote address (players behind one NAT
share an address)."""


@dataclass(frozen=True)
class Limits:
    """The deadlines and caps of one hosting process (see the module docstring)."""

    handshake_timeout: float = HANDSHAKE_TIMEOUT
    idle_timeout: float = IDLE_TIMEOUT
    max_connections: int = MAX_CONNECTIONS
    max_connections_per_address: int = MAX_CONNECTIONS_PER_ADDRESS
    max_users_per_room: int = MAX_USERS
    max_pieces_per_room: int = MAX_PIECES

    def __post_init__(self) -> None:
        for name in ("handshake_timeout", "idle_timeout"):
            if not getattr(self, name) > 0:  # also refuses NaN
                raise UsageError(f"{name} must be a positive number of seconds")
        for name in (
            "max_connections",
            "max_connections_per_address",
            "max_users_per_room",
            "max_pieces_per_room",
        ):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be at least 1, got {getattr(self, name)}")

    @property
    def keepalive_interval(self) -> float:
        """Seconds of quiet after which the host sends a keepalive: a third of the idle timeout
        (so that the answer has two thirds of it to arrive), at most :data:`KEEPALIVE_INTERVAL`."""
        return min(self.idle_timeout / 3, KEEPALIVE_INTERVAL)


def peername(transport: asyncio.BaseTransport) -> object:
    """The socket's peer address as ``transport`` tells it, or None where it cannot: uvloop's
    transports raise ``ValueError`` once their socket is closed (a peer may reset it before it
    is accepted), asyncio's answer None. Read once, as a connection is made: a log line or an
    error about a closed connection must never raise for want of it."""
    try:
        return transport.get_extra_info("peername")
    except (OSError, ValueError):
        return None


class Flood:
    """Counts one kind of control frame a connection receives (websocket pings, TCP
    keepalives), which its transport answers on its own, past the host's slow-consumer check:
    more than ``most`` within ``window`` seconds is a flood, and the connection is dropped."""

    __slots__ = ("_count", "_since", "most", "what", "window")

    def __init__(self, what: str, most: int, window: float) -> None:
        self.what = what
        self.most = most
        self.window = window
        self._count = 0
        self._since = float("-inf")

    def heard(self, now: float) -> bool:
        """Count one received at loop time ``now``; whether that makes it a flood."""
        if now - self._since >= self.window:
            self._count, self._since = 0, now
        self._count += 1
        return self._count > self.most

    def __str__(self) -> str:
        return f"over {self.most} {self.what} in {self.window:g} s"


def address_of(peername: object) -> str:
    """The remote address of a socket's ``peername`` (the host part; an IPv4 address reached over
    IPv6 as plain IPv4), the key of the per-address cap; "an unknown address" when the socket
    could not tell (see :func:`peername`: a peer that reset it before it was accepted)."""
    if peername is None:
        return "an unknown address"
    host = peername[0] if isinstance(peername, tuple) and peername else peername
    text = str(host)
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return text
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


class ConnectionLimiter:
    """Counts the connections open to one hosting process and refuses those over its caps.

    A transport calls :meth:`admit` as it accepts a connection (before reading from it) and
    :meth:`release` once an admitted connection has closed. :attr:`counts` holds the host's
    diagnostics: ``refused_max_connections``, ``refused_max_connections_per_address`` and
    ``handshake_timeout`` (see :meth:`note`).
    """

    def __init__(self, limits: Limits | None = None) -> None:
        """Apply ``limits`` (the defaults when None)."""
        self.limits = limits if limits is not None else Limits()
        self.counts: Counter[str] = Counter()
        self._open: Counter[str] = Counter()
        self._total = 0

    @property
    def open_connections(self) -> int:
        """Connections admitted and not yet released."""
        return self._total

    def admit(self, peername: object) -> str | None:
        """Take a slot for a connection from ``peername``; returns the address to
        :meth:`release` later, or None when a cap refuses it (noted, and the transport closes
        it unread)."""
        address = address_of(peername)
        limits = self.limits
        if self._total >= limits.max_connections:
            self.note(
                "refused_max_connections",
                f"refused a connection from {address}: {self._total} open, the cap "
                f"(--max-connections) is {limits.max_connections}",
            )
            return None
        if self._open[address] >= limits.max_connections_per_address:
            self.note(
                "refused_max_connections_per_address",
                f"refused a connection from {address}: {self._open[address]} open from that "
                f"address, the cap (--max-connections-per-address) is "
                f"{limits.max_connections_per_address}",
            )
            return None
        self._open[address] += 1
        self._total += 1
        return address

    def release(self, address: str) -> None:
        """Give back the slot :meth:`admit` took for ``address``."""
        self._total -= 1
        self._open[address] -= 1
        if not self._open[address]:
            del self._open[address]

    def note(self, kind: str, message: str) -> None:
        """Count one ``kind`` of diagnostic and log it: a warning for the 1st, 2nd, 4th, 8th...
        of a kind (so that a flood cannot flood the log), the others at debug level."""
        self.counts[kind] += 1
        count = self.counts[kind]
        level = logging.WARNING if count & (count - 1) == 0 else logging.DEBUG
        logger.log(level, "%s (%s #%d)", message, kind, count)
