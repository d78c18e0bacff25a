"""The transport seam: what a transport implements to be reachable by its URL scheme.

A :class:`Transport` turns a room URL into a client :class:`~matchlock.transport.Connection`
(:meth:`Transport.connect`) or into a running :class:`Listener` that hands every accepted
connection to a :class:`ConnectionHandler` (:meth:`Transport.listen`). The registry
(:mod:`matchlock.transport.registry`) maps schemes to transports, and
:func:`matchlock.transport.connect.open_connection` and :func:`~matchlock.transport.connect.listen`
look a URL's scheme up there. A transport is handed the URL already split and checked for what
no room URL may hold (a port out of range, a user name, a ``#fragment``): a :class:`RoomURL`.
What is wrong with the rest of it, the transport says with :meth:`RoomURL.bad`, before it opens
any socket.

This module also holds what every transport shares: the handler a server serves
(:class:`ConnectionHandler`) and how a server's URL is written (:func:`format_url`,
:func:`joinable_url`). It opens nothing itself and never looks inside a frame.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import SplitResult, urlsplit

from matchlock.core.errors import InputError
from matchlock.transport import Connection
from matchlock.transport.limits import ConnectionLimiter

__all__ = [
    "BadURLError",
    "ConnectOptions",
    "ConnectionHandler",
    "ListenOptions",
    "Listener",
    "RoomURL",
    "Transport",
    "format_url",
    "joinable_url",
]


class BadURLError(InputError):
    """A room URL that cannot be used: ``url`` and ``reason`` say which and why."""

    def __init__(self, url: str, reason: str) -> None:
        """Record the URL as given and what is wrong with it."""
        self.url = url
        self.reason = reason
        super().__init__(f"{url!r}: {reason}")


@dataclass(frozen=True)
class RoomURL:
    """A room URL as written (``text``) and split (``parts``), with the checks every scheme
    shares done (:meth:`parse`)."""

    text: str
    parts: SplitResult

    @classmethod
    def parse(cls, text: str) -> RoomURL:
        """Split ``text``; a :class:`BadURLError` for what no room URL may hold (an invalid
        IPv6 address, a port that is not 0-65535, a user name or password, a ``#fragment``)."""
        try:
            parts = urlsplit(text)
            parts.port  # noqa: B018 -- raises ValueError for a port that is not 0-65535
        except ValueError as error:
            raise BadURLError(text, str(error)) from None
        if parts.username is not None or parts.fragment:
            raise BadURLError(text, "a room URL has no user name, password or #fragment")
        return cls(text, parts)

    @property
    def scheme(self) -> str:
        """The scheme, lower case ('' when there is none)."""
        return self.parts.scheme

    def bad(self, reason: str) -> BadURLError:
        """The error that says this URL cannot be used, and why."""
        return BadURLError(self.text, reason)

    def host_port(self) -> tuple[str, int]:
        """HOST and PORT of ``scheme://HOST:PORT``, nothing after them."""
        parts = self.parts
        if not parts.hostname:
            raise self.bad(f"no host: use {parts.scheme}://HOST:PORT")
        if parts.port is None:
            raise self.bad(f"no port: use {parts.scheme}://{parts.hostname}:PORT")
        if parts.path not in ("", "/") or parts.query:
            raise self.bad(f"nothing may follow the port in a {parts.scheme}:// URL")
        return parts.hostname, parts.port


@dataclass(frozen=True)
class ConnectOptions:
    """The options of :func:`~matchlock.transport.connect.open_connection`, for every
    transport: each reads those it needs. ``timeout`` bounds the connection; the
    ``discovery_*`` ones are how ``lan://`` looks for its host."""

    timeout: float
    discovery_port: int
    discovery_address: str | None
    discovery_timeout: float


@dataclass(frozen=True)
class ListenOptions:
    """The options of :func:`~matchlock.transport.connect.listen`: ``discovery_port`` is the UDP
    port a ``lan://`` listener answers on."""

    discovery_port: int


class ConnectionHandler(Protocol):
    """What a server hands each accepted connection to (a :class:`~matchlock.app.hosting.RoomHost`).
    Its ``limiter`` holds the caps and timeouts every server of this handler applies."""

    limiter: ConnectionLimiter

    async def handle(self, conn: Connection) -> None:
        """Serve ``conn`` until it closes."""


class Listener(Protocol):
    """A running server (from :meth:`Transport.listen`)."""

    @property
    def url(self) -> str:
        """The URL clients join with."""

    @property
    def address(self) -> tuple[str, int]:
        """The address really bound (host, port)."""

    async def close(self) -> None:
        """Stop listening and close every connection."""


class Transport(Protocol):
    """One way of carrying a room's frames, reached by the URL schemes it is registered for."""

    async def connect(self, url: RoomURL, options: ConnectOptions) -> Connection:
        """Connect to the room host ``url`` names, as a member. Raise :meth:`RoomURL.bad` for a
        URL this transport cannot use, before any socket opens; :class:`OSError` when the host
        cannot be reached; a :class:`~matchlock.transport.ConnectionClosed` when what answers
        does not complete the transport's handshake."""

    async def listen(
        self, url: RoomURL, host: ConnectionHandler, options: ListenOptions
    ) -> Listener:
        """Start serving ``host`` where ``url`` says, within ``host.limiter``'s caps and
        timeouts; :meth:`RoomURL.bad` for a URL this transport cannot listen on."""


def format_url(scheme: str, host: str, port: int) -> str:
    """``scheme://host:port``, with an IPv6 address in brackets."""
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}"


def joinable_url(scheme: str, address: tuple[str, int]) -> str:
    """The URL others join a server bound to ``address`` with: a wildcard address (every
    interface) is shown as this machine's name."""
    host, port = address
    return format_url(scheme, socket.gethostname() if host in ("", "0.0.0.0", "::") else host, port)
