"""Direct TCP, as Ikemen GO netplay connects players: newline-delimited JSON over one socket.

One player hosts the room inside their own process (``tcp://0.0.0.0:7500``) and the others
connect to ``tcp://HOST:7500``. Each frame is one line: the message's compact JSON (which never
holds a raw newline) followed by ``\\n``.

Limits, so that a hostile peer costs a bounded amount of memory:

- a line longer than the reader's limit (:data:`~matchlock.protocol.MAX_MESSAGE_BYTES` on the
  host's side, :data:`CLIENT_MAX_FRAME_BYTES` on a client's, since a welcome can be large)
  closes the connection: nothing after it is read;
- :meth:`TcpConnection.send_nowait` never waits for the peer: the frames queued during one turn
  of the event loop leave together in one write; a peer that lets more than ``max_backlog``
  bytes pile up unsent (beyond a large frame it is still reading) is a slow consumer and is
  disconnected (:class:`Backlog`).

This module also holds what every socket transport shares (:class:`ConnectionHandler`,
:class:`Backlog` and the limits above). It must never look inside a frame: the room protocol
lives in :mod:`matchlock.host` and :mod:`matchlock.client`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Protocol

from matchlock.errors import UsageError
from matchlock.protocol import MAX_MESSAGE_BYTES
from matchlock.transport import Connection, ConnectionClosed, FrameTooLarge

__all__ = [
    "CLIENT_MAX_FRAME_BYTES",
    "CLOSE_TIMEOUT",
    "MAX_BACKLOG_BYTES",
    "Backlog",
    "ConnectionHandler",
    "TcpConnection",
    "TcpServer",
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

CLOSE_TIMEOUT = 5.0
"""Seconds :meth:`TcpConnection.close` waits for queued frames to leave before dropping them."""


class ConnectionHandler(Protocol):
    """What a server hands each accepted connection to (a :class:`~matchlock.hosting.RoomHost`)."""

    async def handle(self, conn: Connection) -> None:
        """Serve ``conn`` until it closes."""


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


def format_url(scheme: str, host: str, port: int) -> str:
    """``scheme://host:port``, with an IPv6 address in brackets."""
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}"


def joinable_url(scheme: str, address: tuple[str, int]) -> str:
    """The URL others join a server bound to ``address`` with: a wildcard address (every
    interface) is shown as this machine's name."""
    host, port = address
    return format_url(scheme, socket.gethostname() if host in ("", "0.0.0.0", "::") else host, port)


class TcpConnection:
    """One end of a direct TCP connection (see the module docstring for framing and limits)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        limit: int,
        max_backlog: int = MAX_BACKLOG_BYTES,
    ) -> None:
        """Wrap an open stream pair whose reader was made with ``limit`` (the largest frame)."""
        self._reader = reader
        self._unreadable = False
        self._writer = writer
        self._limit = limit
        self._backlog = Backlog(max_backlog)
        self._queued: list[bytes] = []
        self._closed = False

    @property
    def peer(self) -> str:
        """The other end's address, for log lines."""
        return str(self._writer.get_extra_info("peername"))

    def send_nowait(self, frame: bytes) -> None:
        """Queue ``frame`` as one line. Raises :class:`ConnectionClosed` once the connection is
        closed, and closes it (then raises) when the peer is a slow consumer."""
        if b"\n" in frame:
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
        self._queued.append(frame)
        if len(self._queued) == 1:
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Write every frame queued during this turn of the event loop with one system call."""
        if not self._queued:
            return
        self._queued.append(b"")  # so that the last frame also ends with a newline
        lines, self._queued = b"\n".join(self._queued), []
        if not self._writer.transport.is_closing():
            self._writer.write(lines)

    async def recv(self) -> bytes:
        """The next line, without its newline."""
        if self._closed or self._unreadable:
            raise ConnectionClosed(f"the TCP connection to {self.peer} is closed")
        try:
            line = await self._reader.readuntil(b"\n")
        except asyncio.IncompleteReadError:
            await self.close()
            raise ConnectionClosed(f"{self.peer} closed the connection") from None
        except (asyncio.LimitOverrunError, ValueError):  # the line is longer than the limit
            logger.warning("%s sent a line over the %d-byte limit", self.peer, self._limit)
            self._unreadable = True  # nothing after an oversized line is ever read
            raise FrameTooLarge(self.peer, self._limit) from None
        except OSError as error:
            self._closed = True
            self._writer.transport.abort()
            raise ConnectionClosed(f"the TCP connection to {self.peer} failed: {error}") from None
        return line[:-1]

    async def close(self) -> None:
        """Stop reading, let queued frames leave (for up to :data:`CLOSE_TIMEOUT` seconds),
        close the socket."""
        if self._closed:
            return
        self._flush()
        self._closed = True
        self._writer.close()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self._writer.wait_closed()
        except TimeoutError:
            self._writer.transport.abort()
        except OSError:  # the peer reset the connection: it is closed either way
            pass


class TcpServer:
    """A listening TCP socket that hands each accepted connection to a handler. Make one with
    :func:`serve_tcp`."""

    def __init__(self, handler: ConnectionHandler, max_backlog: int = MAX_BACKLOG_BYTES) -> None:
        """Serve ``handler``; nothing listens until :meth:`start`."""
        self._handler = handler
        self._max_backlog = max_backlog
        self._server: asyncio.Server | None = None
        self._live: dict[asyncio.Task[object], TcpConnection] = {}

    async def start(self, bind_host: str, port: int) -> None:
        """Listen on ``bind_host:port`` (port 0: any free port, see :attr:`address`)."""
        self._server = await asyncio.start_server(
            self._accept, bind_host, port, limit=MAX_MESSAGE_BYTES
        )

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

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = TcpConnection(reader, writer, MAX_MESSAGE_BYTES, self._max_backlog)
        task = asyncio.current_task()
        assert task is not None  # start_server runs each callback coroutine in its own task
        self._live[task] = conn
        try:
            await self._handler.handle(conn)
        except Exception:
            logger.exception("the handler failed on the connection from %s", conn.peer)
        finally:
            del self._live[task]
            await conn.close()

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
    ``host.handle``; returns the running server (its real port is in ``.address``)."""
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
) -> TcpConnection:
    """Connect to a room host at ``host:port`` (raises :class:`OSError`, such as
    :class:`ConnectionRefusedError` or :class:`TimeoutError`, when it cannot)."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port, limit=limit)
    return TcpConnection(reader, writer, limit, max_backlog)
