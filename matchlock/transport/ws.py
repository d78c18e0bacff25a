"""The websocket transport: ``matchlock serve`` hosts any number of rooms at ``ws://HOST:PORT``.

Built on the ``websockets`` asyncio API. Each frame is one message: a JSON frame (its first
byte is ``{``) one text message, whose UTF-8 bytes go out as they are and come back as bytes,
never decoded here (a message that is not UTF-8 reaches the room protocol as its bytes, as over
TCP, and is refused there as any frame that is not the protocol's JSON); any other frame (a
data frame of a peer transfer, whose first byte is ``0x01``) one binary message, its bytes as
they are. Choices, and why:

- compression is off on both sides: progress messages are ~200 bytes, and permessage-deflate
  doubles the CPU spent per message for almost no saving (measured here: a fan-out to 10
  receivers fell from ~75-99k deliveries/s to ~41k with it);
- the host accepts messages up to :data:`~matchlock.core.protocol.MAX_MESSAGE_BYTES` (``websockets``
  closes with 1009 beyond it, from the frame's header, before its payload is read) and holds at
  most :data:`SERVER_MAX_QUEUE` of them unhandled per connection; a client accepts up to
  :data:`~matchlock.transport.tcp.CLIENT_MAX_FRAME_BYTES`, since a welcome carries the room's
  history;
- a binary message is handed on as the frame it is: the room protocol decides (a host refuses
  anything but a data frame of a transfer of protocol 2, and closes the connection for it);
- keepalives are the websocket's own ping/pong, on both ends: the host pings every
  :attr:`~matchlock.transport.limits.Limits.keepalive_interval` seconds and closes (1011) a
  connection whose pong has not come back by the end of its idle timeout; a member pings every
  :data:`~matchlock.transport.limits.KEEPALIVE_INTERVAL` seconds and gives up on a host after
  :data:`~matchlock.transport.limits.CLIENT_IDLE_TIMEOUT`;
- the server takes the caps of its handler's
  :class:`~matchlock.transport.limits.ConnectionLimiter` as the TCP connection is made: one over
  a cap is closed before a byte of its HTTP request is read; the HTTP upgrade itself must be
  over within the handshake timeout;
- :meth:`WsConnection.send_nowait` queues a text frame (no await, no drain), and the frames
  queued during one turn of the event loop leave in one write: the host relays in batches, and
  one system call per frame would cost more than all the rest of a relay. A host frames its
  text messages itself (a server's frames are unmasked: a 2 to 10 byte header before the
  frame's bytes), a member queues them on its sans-IO protocol (which masks); a binary
  message leaves at once, after what was queued before it (:mod:`~matchlock.transport.wsbinary`).
  A peer that lets more
  than ``max_backlog`` bytes pile up unsent (beyond a large frame it is still reading) is a
  slow consumer and its connection is dropped
  (:class:`~matchlock.transport.tcp.Backlog`). ``websockets`` answers each ping with a pong
  on its own, past that check: a peer that sends more than :data:`MAX_PINGS` pings within
  :data:`PING_WINDOW` seconds (a member sends one every few seconds at most) is dropped, so
  that one that pings without reading cannot pile up pongs in the host's memory.

:data:`WEBSOCKET` is this transport as the registry holds it, for ``ws://`` and ``wss://``
URLs (listening on ``wss://`` is left to a TLS proxy in front of ``ws://``). This module never
looks inside a frame: the room protocol lives in :mod:`matchlock.core.host` and
:mod:`matchlock.core.client`.
"""

from __future__ import annotations

import asyncio
import logging
import struct

from websockets.asyncio.client import connect
from websockets.asyncio.connection import Connection as Websocket
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed as WebsocketClosed
from websockets.exceptions import InvalidHandshake, InvalidMessage
from websockets.frames import CloseCode, Frame, Opcode
from websockets.protocol import Event, Side, State

from matchlock.core.errors import UsageError
from matchlock.core.protocol import MAX_MESSAGE_BYTES
from matchlock.transport import ConnectionClosed, FrameTooLarge
from matchlock.transport.base import (
    ConnectionHandler,
    ConnectOptions,
    ListenOptions,
    RoomURL,
    joinable_url,
)
from matchlock.transport.limits import (
    CLIENT_IDLE_TIMEOUT,
    KEEPALIVE_INTERVAL,
    ConnectionLimiter,
    Flood,
    peername,
)
from matchlock.transport.tcp import (
    CLIENT_MAX_FRAME_BYTES,
    CLOSE_TIMEOUT,
    MAX_BACKLOG_BYTES,
    Backlog,
)
from matchlock.transport.wsbinary import binary_message

__all__ = [
    "SERVER_MAX_QUEUE",
    "WEBSOCKET",
    "HandshakeFailed",
    "TurnWrites",
    "WsConnection",
    "WsServer",
    "WsTransport",
    "connect_ws",
    "serve_ws",
]

logger = logging.getLogger(__name__)

SERVER_MAX_QUEUE = 4
"""Frames a host's connection holds received and not yet handled before it stops reading the
socket (``websockets``' ``max_queue``): with frames of at most 1 MiB, a few MiB per connection."""


class HandshakeFailed(ConnectionClosed):
    """The host at ``url`` did not complete the transport's handshake; ``reason`` says what
    came instead (nothing, half an answer, a status that is not an upgrade)."""

    def __init__(self, url: str, reason: str) -> None:
        """Record the URL and what went wrong."""
        self.url = url
        self.reason = reason
        super().__init__(f"{url}: no websocket handshake: {reason}")


class WsConnection:
    """One end of a websocket connection (see the module docstring for framing and limits)."""

    def __init__(
        self,
        websocket: Websocket,
        max_backlog: int = MAX_BACKLOG_BYTES,
        max_frame: int = 0,
        writes: TurnWrites | None = None,
    ) -> None:
        """Wrap an open ``websockets`` connection (client or server side) whose ``max_size``
        is ``max_frame``; ``writes``, if given, writes what it queues at the end of the turn,
        with every other connection of its server (else it schedules its own write)."""
        self._ws = websocket
        self._peer = str(peername(websocket.transport))
        self._writes = writes
        self._max_frame = max_frame
        self._backlog = Backlog(max_backlog)
        self._flush_scheduled = False
        self._framing = websocket.protocol.side is Side.SERVER  # a member's protocol masks
        self._framed: list[bytes] = []  # headers and text frames queued during this turn
        self._framed_bytes = 0

    @property
    def peer(self) -> str:
        """The other end's address, for log lines (as it was when the connection was made)."""
        return self._peer

    def __repr__(self) -> str:
        return f"<WsConnection {self.peer}>"

    def send_nowait(self, frame: bytes) -> None:
        """Queue ``frame`` as one message: text for JSON (UTF-8, starting with ``{``), binary
        for any other. Raises :class:`ConnectionClosed` once the connection is closing, and
        drops it (then raises) for a slow consumer."""
        ws = self._ws
        if ws.protocol.state is not State.OPEN or ws.transport.is_closing():
            raise ConnectionClosed(f"the websocket to {self.peer} is closed")
        backlog = ws.transport.get_write_buffer_size() + self._framed_bytes
        if self._backlog.exceeded(backlog, len(frame)):
            logger.warning("%s: %d bytes unsent, slow consumer: disconnecting", self.peer, backlog)
            ws.transport.abort()
            raise ConnectionClosed(f"{self.peer} did not keep up ({backlog} bytes unsent)")
        if frame[:1] != b"{":
            self._send_binary(frame)
            return
        if self._framing:
            self._framed += (_text_header(len(frame)), frame)
            self._framed_bytes += len(frame)
        else:
            ws.protocol.send_text(frame)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            if self._writes is not None:
                self._writes.add(self)
            else:
                asyncio.get_running_loop().call_soon(self._flush)

    def _send_binary(self, frame: bytes) -> None:
        """Write ``frame`` as one binary message now, after the frames queued before it,
        without ``websockets`` copying its payload (:mod:`matchlock.transport.wsbinary`)."""
        ws = self._ws
        queued = self._queued()
        if queued:
            ws.transport.writelines(queued)
        masked = ws.protocol.side is Side.CLIENT
        for part in binary_message(frame, masked=masked):
            ws.transport.write(part)

    def _queued(self) -> list[bytes]:
        """The text frames queued so far, taken to be written now."""
        if not self._framing:
            return self._ws.protocol.data_to_send()
        framed, self._framed, self._framed_bytes = self._framed, [], 0
        return framed

    def _flush(self) -> None:
        """Write every frame queued during this turn of the event loop with one system call."""
        self._flush_scheduled = False
        ws = self._ws
        # Once the state has left OPEN, ``websockets`` sends what is queued (and the end of the
        # stream, which data_to_send() may then hold) on its own; while OPEN, only frames.
        if ws.protocol.state is State.OPEN and not ws.transport.is_closing():
            ws.transport.writelines(self._queued())

    async def recv(self) -> bytes:
        """The next message: a text message as its bytes (not decoded), a binary one as it is."""
        try:
            return await self._ws.recv(decode=False)
        except WebsocketClosed as closed:
            sent = closed.sent  # what this side sent when closing, if it closed first
            if sent is not None and sent.code == CloseCode.MESSAGE_TOO_BIG:
                raise FrameTooLarge(self.peer, self._max_frame) from None
            raise ConnectionClosed(f"the websocket to {self.peer} is closed ({closed})") from None

    async def close(self) -> None:
        """Close with the websocket closing handshake, after the frames already queued."""
        if self._framed:
            self._flush()  # before the close frame
        await self._ws.close()


class TurnWrites:
    """The connections of one server with frames queued during this turn of the event loop,
    each written (once) at the next turn: one callback for them all, not one each."""

    def __init__(self) -> None:
        """No connection waiting yet."""
        self._waiting: list[WsConnection] = []

    def add(self, conn: WsConnection) -> None:
        """Write ``conn``'s queued frames at the next turn."""
        if not self._waiting:
            asyncio.get_running_loop().call_soon(self._write)
        self._waiting.append(conn)

    def _write(self) -> None:
        waiting, self._waiting = self._waiting, []
        for conn in waiting:
            conn._flush()


_FIN_TEXT = 0x80 | 0x1
"""The first byte of a whole text frame (FIN set, opcode 1: RFC 6455, section 5.2)."""


def _text_header(length: int) -> bytes:
    """The header of one whole, unmasked text frame of ``length`` bytes."""
    if length < 126:
        return bytes((_FIN_TEXT, length))
    if length < 1 << 16:
        return struct.pack("!BBH", _FIN_TEXT, 126, length)
    return struct.pack("!BBQ", _FIN_TEXT, 127, length)


class WsServer:
    """A running websocket server (from :func:`serve_ws`)."""

    def __init__(self, server: Server) -> None:
        """Wrap a listening ``websockets`` server."""
        self._server = server

    @property
    def address(self) -> tuple[str, int]:
        """The address really bound (host, port)."""
        sockets = list(self._server.sockets)
        if not sockets:
            raise UsageError("the websocket server is not listening")
        name = sockets[0].getsockname()
        return str(name[0]), int(name[1])

    @property
    def url(self) -> str:
        """``ws://HOST:PORT`` to join (see :func:`~matchlock.transport.tcp.joinable_url`)."""
        return joinable_url("ws", self.address)

    async def close(self) -> None:
        """Stop listening, close every connection (1001, going away) and wait for the handlers."""
        self._server.close()
        await self._server.wait_closed()


READ_BYTES = 256 * 1024
"""The most a host reads from one socket at a time (as asyncio's own reads)."""


MAX_PINGS = 32
"""Pings a host answers from one connection within :data:`PING_WINDOW` seconds; the next one
drops the connection (a member pings every
:data:`~matchlock.transport.limits.KEEPALIVE_INTERVAL` seconds, or a third of its idle timeout)."""

PING_WINDOW = 10.0
"""Seconds over which a connection's pings are counted against :data:`MAX_PINGS`."""


def _capped(limiter: ConnectionLimiter) -> type[ServerConnection]:
    """A ``websockets`` server connection that ``limiter`` admits as the TCP connection is made
    (before a byte is read) and releases once it is lost.

    It reads into one buffer that every connection of the server shares (the loop reads one
    socket at a time, and ``websockets`` takes what was read before the next read), and hands
    on a copy of what arrived: asyncio's own reads allocate a new 256 KiB buffer per read,
    which the allocator maps, faults in and unmaps each time, across every thread of the
    process (measured here: about a tenth of a host's CPU at 3,000 reports/s)."""
    shared = memoryview(bytearray(READ_BYTES))

    class Capped(ServerConnection, asyncio.BufferedProtocol):
        address: str | None = None
        pings: Flood

        def get_buffer(self, sizehint: int) -> memoryview:
            return shared

        def process_event(self, event: Event) -> None:
            ping = isinstance(event, Frame) and event.opcode is Opcode.PING
            if ping and self.pings.heard(self.loop.time()):
                logger.warning("%s sent %s: disconnecting", self.address, self.pings)
                self.transport.abort()
                return
            super().process_event(event)

        def buffer_updated(self, nbytes: int) -> None:
            self.data_received(bytes(shared[:nbytes]))

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.pings = Flood("pings", MAX_PINGS, PING_WINDOW)
            self.address = limiter.admit(peername(transport))
            if self.address is None:
                Websocket.connection_made(self, transport)  # no handler task: nothing is read
                self.transport.abort()
                return
            super().connection_made(transport)

        def connection_lost(self, exc: Exception | None) -> None:
            super().connection_lost(exc)
            if self.address is not None:
                limiter.release(self.address)
                self.address = None

    return Capped


async def serve_ws(
    host: ConnectionHandler, bind_host: str, port: int, *, max_backlog: int = MAX_BACKLOG_BYTES
) -> WsServer:
    """Listen for websocket connections on ``bind_host:port`` (port 0: any free port) and serve
    each with ``host.handle``, within ``host.limiter``'s caps and timeouts."""

    writes = TurnWrites()

    async def handler(websocket: ServerConnection) -> None:
        await host.handle(WsConnection(websocket, max_backlog, MAX_MESSAGE_BYTES, writes))

    limits = host.limiter.limits
    server = await serve(
        handler,
        bind_host,
        port,
        compression=None,
        max_size=MAX_MESSAGE_BYTES,
        max_queue=SERVER_MAX_QUEUE,
        open_timeout=limits.handshake_timeout,
        ping_interval=limits.keepalive_interval,
        ping_timeout=limits.idle_timeout - limits.keepalive_interval,
        close_timeout=CLOSE_TIMEOUT,
        create_connection=_capped(host.limiter),
    )
    return WsServer(server)


async def connect_ws(
    url: str,
    *,
    timeout: float = 10.0,
    max_size: int = CLIENT_MAX_FRAME_BYTES,
    max_backlog: int = MAX_BACKLOG_BYTES,
    idle_timeout: float = CLIENT_IDLE_TIMEOUT,
) -> WsConnection:
    """Connect to the room host at ``url`` (``ws://`` or ``wss://``), pinging it every
    :data:`~matchlock.transport.limits.KEEPALIVE_INTERVAL` seconds (more often for a short
    ``idle_timeout``) and closing once it has left a ping unanswered for about ``idle_timeout``
    seconds. Raises
    :class:`OSError` when the host cannot be reached and
    ``websockets.exceptions.InvalidHandshake`` when what answers is not a websocket server."""
    interval = min(KEEPALIVE_INTERVAL, idle_timeout / 3)
    try:
        websocket = await connect(
            url,
            compression=None,
            max_size=max_size,
            open_timeout=timeout,
            ping_interval=interval,
            ping_timeout=idle_timeout - interval,
            close_timeout=CLOSE_TIMEOUT,
        )
    except InvalidMessage as error:
        if not isinstance(error.__cause__, EOFError):
            raise
        raise ConnectionClosed(
            f"{url} closed the connection without answering (a host over its connection caps "
            "does so)"
        ) from None
    return WsConnection(websocket, max_backlog, max_size)


class WsTransport:
    """``ws://HOST[:PORT][/PATH]`` and ``wss://`` (TLS) to join; ``ws://HOST:PORT`` to listen."""

    async def connect(self, url: RoomURL, options: ConnectOptions) -> WsConnection:
        """Connect to the host at ``url`` within ``options.timeout``; a host that answers but
        does not complete the websocket handshake is :class:`HandshakeFailed`."""
        if not url.parts.hostname:
            raise url.bad(f"no host: use {url.scheme}://HOST:PORT")
        try:
            return await connect_ws(url.text, timeout=options.timeout)
        except InvalidHandshake as error:
            cause = f" ({error.__cause__})" if error.__cause__ is not None else ""
            raise HandshakeFailed(url.text, f"{error}{cause}") from error

    async def listen(
        self, url: RoomURL, host: ConnectionHandler, options: ListenOptions
    ) -> WsServer:
        """Serve ``host`` on ``url``'s HOST:PORT (``wss://`` is refused: TLS is a proxy's job)."""
        if url.scheme == "wss":
            raise url.bad("listening with TLS is not built in: serve ws:// behind a proxy")
        return await serve_ws(host, *url.host_port())


WEBSOCKET = WsTransport()
"""The websocket transport, registered for ``ws`` and ``wss``."""
