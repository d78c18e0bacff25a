"""Room URLs: joining and hosting by URL, through the transports registered by scheme.

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

Both look the URL's scheme up in :data:`TRANSPORTS` (a
:class:`~matchlock.transport.registry.Registry`), where the built-in transports are registered
below, one line each; adding a transport is one new module, one line here, and a subclass of
the contract suite ``tests/transport/contract.py`` (docs/adding-a-transport.md).

A URL that cannot be used raises :class:`BadURLError` naming the URL and what is wrong with it
(a scheme nobody registered: the schemes that are), before any socket is opened. Failing to
reach a host raises :class:`OSError` (as the standard library does, :class:`TimeoutError`
included), a host that answers but does not complete the websocket handshake (it closed, died
halfway through its answer, or is not a websocket server) raises :class:`HandshakeFailed`, and
a room nobody answers for on the LAN raises :class:`~matchlock.transport.lan.NoHostFound`. All
three are worth trying again later (a host restarting looks like each of them for a moment); a
:class:`BadURLError` never is.
"""

from __future__ import annotations

from matchlock.transport import Connection
from matchlock.transport.base import (
    BadURLError,
    ConnectionHandler,
    ConnectOptions,
    Listener,
    ListenOptions,
    RoomURL,
)
from matchlock.transport.lan import DISCOVERY_PORT, LAN, LAN_PORT
from matchlock.transport.registry import Registry
from matchlock.transport.tcp import TCP
from matchlock.transport.ws import WEBSOCKET, HandshakeFailed

__all__ = [
    "LAN_PORT",
    "TRANSPORTS",
    "BadURLError",
    "HandshakeFailed",
    "Listener",
    "listen",
    "open_connection",
]

TRANSPORTS = Registry()
"""The transports :func:`open_connection` and :func:`listen` use, by scheme."""
TRANSPORTS.register(WEBSOCKET, "ws", "wss")
TRANSPORTS.register(TCP, "tcp")
TRANSPORTS.register(LAN, "lan")


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
    room_url = RoomURL.parse(url)
    options = ConnectOptions(timeout, discovery_port, discovery_address, discovery_timeout)
    return await TRANSPORTS.transport(room_url).connect(room_url, options)


async def listen(
    url: str, host: ConnectionHandler, *, discovery_port: int = DISCOVERY_PORT
) -> Listener:
    """Start serving ``host`` (a :class:`~matchlock.app.hosting.RoomHost`) where ``url`` says;
    ``discovery_port`` is the UDP port a ``lan://`` listener answers on."""
    room_url = RoomURL.parse(url)
    return await TRANSPORTS.transport(room_url).listen(
        room_url, host, ListenOptions(discovery_port)
    )
