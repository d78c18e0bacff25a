"""Room URLs: the one place that maps a URL to a transport, for joining and for hosting.

=================================  =============================================================
URL                                 meaning
=================================  =============================================================
``ws://HOST[:PORT][/PATH]``         websocket (:mod:`matchlock.transport.ws`); ``wss://`` for TLS
``tcp://HOST:PORT``                 direct TCP, newline-delimited JSON
                                    (:mod:`matchlock.transport.tcp`)
``lan://ROOM_ID``                   find a host of ROOM_ID on the local network by UDP discovery,
                                    then direct TCP (:mod:`matchlock.transport.lan`)
=================================  =============================================================

:func:`open_connection` joins; :func:`listen` hosts: ``ws://HOST:PORT`` and ``tcp://HOST:PORT``
listen there (port 0: any free port), ``lan://ROOM_ID[?port=7500&bind=0.0.0.0]`` listens on
direct TCP and answers discovery for ROOM_ID. Listening with TLS (``wss://``) is left to a
reverse proxy in front of ``ws://``.

A URL that cannot be used raises :class:`BadURLError` naming the URL and what is wrong with it,
before any socket is opened. Failing to reach a host raises :class:`OSError` (as the standard
library does, :class:`TimeoutError` included), a host that answers but does not complete the
websocket handshake (it closed, died halfway through its answer, or is not a websocket server)
raises :class:`HandshakeFailed`, and a room nobody answers for on the LAN raises
:class:`~matchlock.transport.lan.NoHostFound`. All three are worth trying again later (a host
restarting looks like each of them for a moment); a :class:`BadURLError` never is.
"""

from __future__ import annotations

from typing import Protocol
from urllib.parse import SplitResult, parse_qsl, urlsplit

from pydantic import TypeAdapter, ValidationError
from websockets.exceptions import InvalidHandshake

from matchlock.config import SafeName
from matchlock.errors import InputError
from matchlock.transport import Connection, ConnectionClosed
from matchlock.transport.lan import DISCOVERY_PORT, connect_lan, serve_lan
from matchlock.transport.tcp import ConnectionHandler, connect_tcp, serve_tcp
from matchlock.transport.ws import connect_ws, serve_ws

__all__ = [
    "LAN_PORT",
    "SCHEMES",
    "BadURLError",
    "HandshakeFailed",
    "Listener",
    "listen",
    "open_connection",
]

SCHEMES = ("ws", "wss", "tcp", "lan")
"""The URL schemes a room can be joined with."""

LAN_PORT = 7500
"""The TCP port a ``lan://`` host listens on unless ``?port=`` says otherwise (Ikemen GO's)."""

_ROOM_ID: TypeAdapter[str] = TypeAdapter(SafeName)


class BadURLError(InputError):
    """A room URL that cannot be used: ``url`` and ``reason`` say which and why."""

    def __init__(self, url: str, reason: str) -> None:
        """Record the URL as given and what is wrong with it."""
        self.url = url
        self.reason = reason
        super().__init__(f"{url!r}: {reason}")


class HandshakeFailed(ConnectionClosed):
    """The host at ``url`` did not complete the transport's handshake; ``reason`` says what
    came instead (nothing, half an answer, a status that is not an upgrade)."""

    def __init__(self, url: str, reason: str) -> None:
        """Record the URL and what went wrong."""
        self.url = url
        self.reason = reason
        super().__init__(f"{url}: no websocket handshake: {reason}")


class Listener(Protocol):
    """A running server from :func:`listen`."""

    @property
    def url(self) -> str:
        """The URL clients join with."""

    @property
    def address(self) -> tuple[str, int]:
        """The address really bound (host, port)."""

    async def close(self) -> None:
        """Stop listening and close every connection."""


def _split(url: str) -> SplitResult:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not 0-65535
    except ValueError as error:
        raise BadURLError(url, str(error)) from None
    if parts.scheme not in SCHEMES:
        shown = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
        raise BadURLError(url, f"{shown}; use ws://, wss://, tcp:// or lan://")
    if parts.username is not None or parts.fragment:
        raise BadURLError(url, "a room URL has no user name, password or #fragment")
    return parts


def _host_port(url: str, parts: SplitResult) -> tuple[str, int]:
    """HOST and PORT of ``scheme://HOST:PORT``, nothing after them."""
    if not parts.hostname:
        raise BadURLError(url, f"no host: use {parts.scheme}://HOST:PORT")
    if parts.port is None:
        raise BadURLError(url, f"no port: use {parts.scheme}://{parts.hostname}:PORT")
    if parts.path not in ("", "/") or parts.query:
        raise BadURLError(url, f"nothing may follow the port in a {parts.scheme}:// URL")
    return parts.hostname, parts.port


def _room_id(url: str, parts: SplitResult) -> str:
    """ROOM_ID of ``lan://ROOM_ID`` (taken as written: room ids are case-sensitive)."""
    try:
        room_id = _ROOM_ID.validate_python(parts.netloc)
    except ValidationError:
        raise BadURLError(
            url, f"{parts.netloc!r} is not a room id (letters, digits, _ . -)"
        ) from None
    if parts.path not in ("", "/"):
        raise BadURLError(url, "use lan://ROOM_ID")
    return room_id


def _lan_options(url: str, parts: SplitResult) -> tuple[str, int]:
    """``bind`` and ``port`` from the query of a ``lan://`` URL to listen on."""
    try:
        options = dict(parse_qsl(parts.query, strict_parsing=bool(parts.query)))
        port = int(options.pop("port", LAN_PORT))
    except ValueError as error:
        raise BadURLError(url, f"bad query: {error}") from None
    bind = options.pop("bind", "0.0.0.0")
    if options:
        raise BadURLError(url, f"unknown option(s) {sorted(options)}; only port and bind")
    if not 0 <= port < 65536:
        raise BadURLError(url, f"port {port} is not 0-65535")
    return bind, port


async def open_connection(
    url: str,
    *,
    timeout: float = 10.0,
    discovery_port: int = DISCOVERY_PORT,
    discovery_address: str | None = None,
    discovery_timeout: float = 3.0,
) -> Connection:
    """Connect to the room host that ``url`` names (see the module docstring). ``timeout``
    bounds the connection; the ``discovery_*`` parameters are for ``lan://`` (by default
    discovery asks every network this machine is on; ``discovery_address`` asks only there)."""
    parts = _split(url)
    match parts.scheme:
        case "ws" | "wss":
            if not parts.hostname:
                raise BadURLError(url, f"no host: use {parts.scheme}://HOST:PORT")
            try:
                return await connect_ws(url, timeout=timeout)
            except InvalidHandshake as error:
                cause = f" ({error.__cause__})" if error.__cause__ is not None else ""
                raise HandshakeFailed(url, f"{error}{cause}") from error
        case "tcp":
            host, port = _host_port(url, parts)
            return await connect_tcp(host, port, timeout=timeout)
        case _:
            room_id = _room_id(url, parts)
            if parts.query:
                raise BadURLError(url, "options after lan://ROOM_ID are for hosting, not joining")
            return await connect_lan(
                room_id,
                timeout=discovery_timeout,
                discovery_port=discovery_port,
                discovery_address=discovery_address,
            )


async def listen(
    url: str, host: ConnectionHandler, *, discovery_port: int = DISCOVERY_PORT
) -> Listener:
    """Start serving ``host`` (a :class:`~matchlock.hosting.RoomHost`) where ``url`` says;
    ``discovery_port`` is the UDP port a ``lan://`` listener answers on."""
    parts = _split(url)
    match parts.scheme:
        case "ws":
            return await serve_ws(host, *_host_port(url, parts))
        case "tcp":
            return await serve_tcp(host, *_host_port(url, parts))
        case "lan":
            room_id = _room_id(url, parts)
            bind, port = _lan_options(url, parts)
            return await serve_lan(
                host, bind, port, announce=(room_id,), discovery_port=discovery_port
            )
        case _:
            raise BadURLError(url, "listening with TLS is not built in: serve ws:// behind a proxy")
