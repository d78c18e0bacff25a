"""Direct TCP, as Ikemen GO netplay connects players: newline-delimited JSON over one socket.

One player hosts the room inside their own process (``tcp://0.0.0.0:7500``) and the others
connect to ``tcp://HOST:7500``. A JSON frame (its first byte is ``{``) is one line: the
message's compact JSON (which never holds a raw newline) followed by ``\\n``. Any other frame
(a data frame of a peer transfer, of protocol 2) is binary: the byte ``0x00``, the frame's
length as a 4-byte big-endian integer, then the frame's bytes as they are, with no base64 and
no newline (``0x00`` never begins a line of JSON, so the first byte tells them apart). A peer
of protocol 1 is never sent one.

An empty line is a keepalive, never a frame: the reader drops it. The listening side (the host)
sends one on a connection that has been quiet, in either direction, for its keepalive interval
(:attr:`~matchlock.transport.limits.Limits.keepalive_interval`); the connecting side (a member)
answers each with one. Each side closes a connection on which nothing at all (no byte of a
frame, no keepalive) arrived for its idle timeout (:class:`Keepalive`): a frozen or vanished
peer is dropped, a quiet one is not.

The server takes the caps of its handler's :class:`~matchlock.transport.limits.ConnectionLimiter`
at accept: a connection over a cap is closed before a byte of it is read.

Limits, so that a hostile peer costs a bounded amount of memory:

- a line longer than the reader's limit (:data:`~matchlock.core.protocol.MAX_MESSAGE_BYTES` on the
  host's side, :data:`CLIENT_MAX_FRAME_BYTES` on a client's, since a welcome can be large), or
  a binary frame announcing more, closes the connection: nothing after it is read (a binary
  frame's payload is not read at all);
- :meth:`TcpConnection.send_nowait` never waits for the peer: the frames queued during one turn
  of the event loop leave together in one write; a peer that lets more than ``max_backlog``
  bytes pile up unsent (beyond a large frame it is still reading) is a slow consumer and is
  disconnected (:class:`Backlog`);
- more than :data:`MAX_KEEPALIVES` keepalives within :data:`KEEPALIVE_WINDOW` seconds close the
  connection (a flood of them, read a byte at a time and answered on a member's side, would
  hold the loop while they are buffered).

:data:`TCP` is this transport as the registry holds it, for ``tcp://`` URLs. This module also
holds what every socket transport shares (:class:`Backlog` and the limits above; the handler a
server serves and how its URL is written are :mod:`matchlock.transport.base`'s, and named here
too). It must never look inside a frame: the room protocol lives in :mod:`matchlock.core.host` and
:mod:`matchlock.core.client`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import SupportsIndex

from matchlock.core.errors import UsageError
from matchlock.core.protocol import MAX_MESSAGE_BYTES
from matchlock.transport import ConnectionClosed, FrameTooLarge
from matchlock.transport.base import (
    ConnectionHandler,
    ConnectOptions,
    ListenOptions,
    RoomURL,
    format_url,
    joinable_url,
)
from matchlock.transport.limits import CLIENT_IDLE_TIMEOUT, Flood, peername

__all__ = [
    "BINARY_FRAME_MARK",
    "CLIENT_MAX_FRAME_BYTES",
    "CLOSE_TIMEOUT",
    "MAX_BACKLOG_BYTES",
    "TCP",
    "Backlog",
    "ConnectionHandler",
    "Keepalive",
    "TcpConnection",
    "TcpServer",
    "TcpTransport",
    "connect_tcp",
    "format_url",
    "joinable_url",
    "serve_tcp",
]

logger = logging.getLogger(__name__)

CLIENT_MAX_FRAME_BYTES = 64 << 20
"""Largest frame a client accepts from the host: a welcome carries the room's history."""

MAX_BACKLOG_BYTES = 4 << 20
"""Bytes a peer may leave unsent before it counts as a slow consumer and is disconnected, on top
of a larger frame it is still reading (see :class:`Backlog`)."""

MAX_KEEPALIVES = 32
"""Keepalives read from one connection within :data:`KEEPALIVE_WINDOW` seconds; the next one
drops it (each end sends one after several quiet seconds)."""

KEEPALIVE_WINDOW = 10.0
"""Seconds over which a connection's keepalives are counted against :data:`MAX_KEEPALIVES`."""

BINARY_FRAME_MARK = b"\x00"
"""The byte a binary frame begins with (then its length, u32 big-endian, then its bytes)."""

CLOSE_TIMEOUT = 5.0
"""Seconds :meth:`TcpConnection.close` waits for queued frames to leave before dropping them."""


class Backlog:
    """Tells a slow consumer from a peer reading one large frame.

    A peer is a slow consumer once more than ``limit`` bytes sent to it wait unsent. A frame
    larger than ``limit`` (a welcome carrying a long history) raises the allowance to the
    backlog it makes plus ``limit``, until the peer has read the backlog down to ``limit``
    again: a big welcome never gets its reader dropped, a stalled reader still is.
    """

    def __init__(self, limit: int) -> None:
        """Allow ``limit`` bytes of backlog beyond any large frame on its way."""
        self.limit = limit
        self._allowed = limit

    def exceeded(self, backlog: int, frame_size: int) -> bool:
        """Whether a peer with ``backlog`` bytes unsent is too slow to take a ``frame_size``
        frame more (if not, the frame counts as queued)."""
        if backlog > self._allowed:
            return True
        if backlog <= self.limit:
            self._allowed = self.limit
        if frame_size > self.limit:
            self._allowed = max(self._allowed, backlog + frame_size + self.limit)
        return False


@dataclass(frozen=True)
class Keepalive:
    """How one end of a TCP connection keeps it alive and notices a dead peer.

    ``idle_timeout``: close once nothing arrived for this many seconds. ``interval``: on the
    host's side, send a keepalive once the connection has been quiet (in either direction) for
    this long; None on a member's side, which answers each keepalive it reads instead.
    """

    idle_timeout: float
    interval: float | None = None


class _Reader(asyncio.StreamReader):
    """A stream reader that notes when its last bytes arrived (the idle timer's clock), since a
    large frame arrives in many reads before it is a line."""

    def __init__(self, limit: int, clock: Callable[[], float]) -> None:
        super().__init__(limit)
        self.clock = clock
        self.heard_at = clock()
        self.heard_any = False

    def feed_data(self, data: Iterable[SupportsIndex]) -> None:
        self.heard_at = self.clock()
        self.heard_any = True
        super().feed_data(data)


class TcpConnection:
    """One end of a direct TCP connection (see the module docstring for framing and limits)."""

    def __init__(
        self,
        reader: _Reader,
        writer: asyncio.StreamWriter,
        limit: int,
        max_backlog: int,
        keepalive: Keepalive,
    ) -> None:
        """Wrap an open stream pair whose reader was made with ``limit`` (the largest frame);
        start keeping it alive."""
        self._reader = reader
        self._peer = str(peername(writer.transport))
        self._unreadable = False
        self._writer = writer
        self._limit = limit
        self._backlog = Backlog(max_backlog)
        self._queued: list[bytes] = []
        self._closed = False
        self._keepalive = keepalive
        self._loop = asyncio.get_running_loop()
        self._spoke_at = self._loop.time()
        self._pinged_at = float("-inf")
        self._keepalives = Flood("keepalives", MAX_KEEPALIVES, KEEPALIVE_WINDOW)
        self._timed_out = False
        self._timer = self._loop.call_soon(self._tick)

    @property
    def peer(self) -> str:
        """The other end's address, for log lines (as it was when the connection was made)."""
        return self._peer

    def __repr__(self) -> str:
        return f"<TcpConnection {self.peer}>"

    def send_nowait(self, frame: bytes) -> None:
        """Queue ``frame``: one line for JSON (starting with ``{``), a binary frame for any
        other. Raises :class:`ConnectionClosed` once the connection is closed, and closes it
        (then raises) when the peer is a slow consumer."""
        if not frame:
            raise UsageError("a TCP frame is never empty: an empty line is a keepalive")
        binary = frame[:1] != b"{"
        if not binary and b"\n" in frame:
            raise UsageError("a TCP frame must be one line: compact JSON holds no raw newline")
        transport = self._writer.transport
        if self._closed or transport.is_closing():
            raise ConnectionClosed(f"the TCP connection to {self.peer} is closed")
        backlog = transport.get_write_buffer_size()
        if self._backlog.exceeded(backlog, len(frame)):
            logger.warning("%s: %d bytes unsent, slow consumer: disconnecting", self.peer, backlog)
            self._closed = True
            transport.abort()
            raise ConnectionClosed(f"{self.peer} did not keep up ({backlog} bytes unsent)")
        if not self._queued:
            self._loop.call_soon(self._flush)
        if binary:
            self._queued += (BINARY_FRAME_MARK + len(frame).to_bytes(4, "big"), frame)
        else:
            self._queued += (frame, b"\n")

    def _flush(self) -> None:
        """Write every frame queued during this turn of the event loop with one system call."""
        if not self._queued:
            return
        data, self._queued = b"".join(self._queued), []
        self._write(data)

    def _write(self, data: bytes) -> None:
        if not self._writer.transport.is_closing():
            self._writer.write(data)
            self._spoke_at = self._loop.time()

    def _tick(self) -> None:
        """Close a connection silent for the idle timeout; on the host's side, send a keepalive
        on one quiet for the interval. Runs again when the next of these falls due."""
        if self._closed or self._writer.transport.is_closing():
            return
        now, heard = self._loop.time(), self._reader.heard_at
        keepalive = self._keepalive
        if now - heard >= keepalive.idle_timeout:
            logger.info(
                "%s: nothing arrived for %g s (no frame, no keepalive): closing",
                self.peer,
                keepalive.idle_timeout,
            )
            self._timed_out = True
            self._writer.transport.abort()
            return
        due = heard + keepalive.idle_timeout
        if keepalive.interval is not None:
            interval = keepalive.interval
            ping_due = max(min(heard, self._spoke_at), self._pinged_at) + interval
            if ping_due <= now:
                self._write(b"\n")
                self._pinged_at = now
                ping_due = now + interval
            due = min(due, ping_due)
        self._timer = self._loop.call_at(due, self._tick)

    async def recv(self) -> bytes:
        """The next frame: a line without its newline, or a binary frame's bytes (keepalives
        are dropped, and answered on a member's side)."""
        if self._closed or self._unreadable:
            raise ConnectionClosed(f"the TCP connection to {self.peer} is closed")
        try:
            first = await self._reader.readexactly(1)
            while first == b"\n":
                self._keepalive_heard()
                if self._keepalive.interval is None:
                    self._write(b"\n")
                first = await self._reader.readexactly(1)
            if first == BINARY_FRAME_MARK:
                length = int.from_bytes(await self._reader.readexactly(4), "big")
                if length > self._limit:
                    raise ValueError(length)
                return await self._reader.readexactly(length)
            line = first + await self._reader.readuntil(b"\n")
            if len(line) > self._limit + 1:
                raise ValueError(len(line))
        except asyncio.IncompleteReadError:
            await self.close()
            if self._timed_out:
                idle = self._keepalive.idle_timeout
                raise ConnectionClosed(f"nothing arrived from {self.peer} for {idle:g} s") from None
            if self._keepalive.interval is None and not self._reader.heard_any:
                raise ConnectionClosed(
                    f"{self.peer} closed the connection without sending a byte (a host over its "
                    "connection caps does so)"
                ) from None
            raise ConnectionClosed(f"{self.peer} closed the connection") from None
        except (asyncio.LimitOverrunError, ValueError):  # the frame is longer than the limit
            logger.warning("%s sent a frame over the %d-byte limit", self.peer, self._limit)
            self._unreadable = True  # nothing after an oversized line is ever read
            raise FrameTooLarge(self.peer, self._limit) from None
        except OSError as error:
            self._closed = True
            self._writer.transport.abort()
            raise ConnectionClosed(f"the TCP connection to {self.peer} failed: {error}") from None
        return line[:-1]

    def _keepalive_heard(self) -> None:
        """Count a keepalive against :data:`MAX_KEEPALIVES`; past it, drop the connection (a
        peer sending a flood of them would have each read, a byte at a time, and answered,
        without the loop ever getting a turn while they are buffered)."""
        if not self._keepalives.heard(self._loop.time()):
            return
        logger.warning("%s sent %s: disconnecting", self.peer, self._keepalives)
        self._closed = True
        self._writer.transport.abort()
        raise ConnectionClosed(f"{self.peer} sent {self._keepalives}")

    async def close(self) -> None:
        """Stop reading, let queued frames leave (for up to :data:`CLOSE_TIMEOUT` seconds),
        close the socket."""
        if self._closed:
            return
        self._flush()
        self._closed = True
        self._timer.cancel()
        self._writer.close()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self._writer.wait_closed()
        except TimeoutError:
            self._writer.transport.abort()
        except OSError:  # the peer reset the connection: it is closed either way
            pass


class TcpServer:
    """A listening TCP socket that hands each accepted connection to a handler, within the caps
    and timeouts of the handler's :class:`~matchlock.transport.limits.ConnectionLimiter`. Make
    one with :func:`serve_tcp`."""

    def __init__(self, handler: ConnectionHandler, max_backlog: int = MAX_BACKLOG_BYTES) -> None:
        """Serve ``handler``; nothing listens until :meth:`start`."""
        self._handler = handler
        self._limiter = handler.limiter
        limits = self._limiter.limits
        self._keepalive = Keepalive(limits.idle_timeout, limits.keepalive_interval)
        self._max_backlog = max_backlog
        self._server: asyncio.Server | None = None
        self._live: dict[asyncio.Task[None], TcpConnection] = {}

    async def start(self, bind_host: str, port: int) -> None:
        """Listen on ``bind_host:port`` (port 0: any free port, see :attr:`address`)."""
        loop = asyncio.get_running_loop()

        def protocol() -> asyncio.StreamReaderProtocol:
            return asyncio.StreamReaderProtocol(_Reader(MAX_MESSAGE_BYTES, loop.time), self._accept)

        self._server = await loop.create_server(protocol, bind_host, port)

    @property
    def address(self) -> tuple[str, int]:
        """The address really bound (host, port)."""
        if self._server is None or not self._server.sockets:
            raise UsageError("the TCP server is not listening")
        name = self._server.sockets[0].getsockname()
        return str(name[0]), int(name[1])

    @property
    def url(self) -> str:
        """``tcp://HOST:PORT`` to join (see :func:`joinable_url`)."""
        return joinable_url("tcp", self.address)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Called as the connection is made, before the socket is read: refuse it over a cap,
        else serve it in a task of its own."""
        address = self._limiter.admit(peername(writer.transport))
        if address is None:
            writer.transport.abort()  # reading has not started: not a byte of it is read
            return
        assert isinstance(reader, _Reader)  # made by start()
        conn = TcpConnection(reader, writer, MAX_MESSAGE_BYTES, self._max_backlog, self._keepalive)
        task = asyncio.get_running_loop().create_task(self._serve(conn, address))
        self._live[task] = conn

    async def _serve(self, conn: TcpConnection, address: str) -> None:
        try:
            await self._handler.handle(conn)
        except Exception:
            logger.exception("the handler failed on the connection from %s", conn.peer)
        finally:
            try:
                await conn.close()
            finally:
                self._limiter.release(address)
                task = asyncio.current_task()
                assert task is not None
                del self._live[task]  # last: close() waits for the task while it is listed

    async def close(self) -> None:
        """Stop listening, close every open connection and wait for their handlers to end
        (cancelling any still running :data:`CLOSE_TIMEOUT` seconds later)."""
        if self._server is None:
            return
        self._server.close()
        await asyncio.gather(*(conn.close() for conn in list(self._live.values())))
        handlers = list(self._live)
        if handlers:  # a handler ends once its connection is closed; one that does not is cut
            _, stuck = await asyncio.wait(handlers, timeout=CLOSE_TIMEOUT)
            for task in stuck:
                task.cancel()
            await asyncio.gather(*stuck, return_exceptions=True)
        await self._server.wait_closed()


async def serve_tcp(
    host: ConnectionHandler, bind_host: str, port: int, *, max_backlog: int = MAX_BACKLOG_BYTES
) -> TcpServer:
    """Listen for direct TCP connections on ``bind_host:port`` and serve each with
    ``host.handle``, within ``host.limiter``'s caps and timeouts; returns the running server
    (its real port is in ``.address``)."""
    server = TcpServer(host, max_backlog)
    await server.start(bind_host, port)
    return server


async def connect_tcp(
    host: str,
    port: int,
    *,
    timeout: float = 10.0,
    max_backlog: int = MAX_BACKLOG_BYTES,
    limit: int = CLIENT_MAX_FRAME_BYTES,
    idle_timeout: float = CLIENT_IDLE_TIMEOUT,
) -> TcpConnection:
    """Connect to a room host at ``host:port`` as a member (answering the host's keepalives,
    closing after ``idle_timeout`` seconds without a byte from it). Raises :class:`OSError`,
    such as :class:`ConnectionRefusedError` or :class:`TimeoutError`, when it cannot."""
    loop = asyncio.get_running_loop()
    reader = _Reader(limit, loop.time)
    async with asyncio.timeout(timeout):
        transport, protocol = await loop.create_connection(
            lambda: asyncio.StreamReaderProtocol(reader), host, port
        )
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    return TcpConnection(reader, writer, limit, max_backlog, Keepalive(idle_timeout))


class TcpTransport:
    """``tcp://HOST:PORT``: join a host there, or listen there (port 0: any free port)."""

    async def connect(self, url: RoomURL, options: ConnectOptions) -> TcpConnection:
        """Connect to the host at ``url``'s HOST:PORT within ``options.timeout``."""
        return await connect_tcp(*url.host_port(), timeout=options.timeout)

    async def listen(
        self, url: RoomURL, host: ConnectionHandler, options: ListenOptions
    ) -> TcpServer:
        """Serve ``host`` on ``url``'s HOST:PORT."""
        return await serve_tcp(host, *url.host_port())


TCP = TcpTransport()
"""The direct TCP transport, registered for ``tcp``."""
