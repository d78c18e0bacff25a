"""The in-memory transport: two connected ends in one process (embedding, tests).

``a, b = memory_pair()``: frames sent on one end arrive, in order, at the other, as the same
bytes objects (JSON and binary data frames alike: nothing to tell apart). Closing either
end closes both once the frames already sent have been received.

An in-process link cannot go silent while its process lives, nor come from an address: it has
no keepalives, no idle timeout and no connection caps. The host's handshake deadline still
applies (:meth:`matchlock.app.hosting.RoomHost.handle` keeps it, whatever the transport).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

from matchlock.transport import Connection, ConnectionClosed

__all__ = ["MemoryConnection", "memory_connector", "memory_pair"]


class RoomHostLike(Protocol):
    """Anything that serves a connection (a :class:`matchlock.app.hosting.RoomHost`)."""

    async def handle(self, conn: Connection) -> None:
        """Serve ``conn`` until it closes."""


_CLOSED = b""  # never a frame: frames are JSON objects or data frames, never empty


class MemoryConnection:
    """One end of an in-memory connection."""

    def __init__(self, inbox: asyncio.Queue[bytes], outbox: asyncio.Queue[bytes]) -> None:
        self._inbox = inbox
        self._outbox = outbox
        self.closed = False

    def __repr__(self) -> str:
        return f"<MemoryConnection {'closed' if self.closed else 'open'}>"

    def send_nowait(self, frame: bytes) -> None:
        """Deliver ``frame`` to the other end."""
        if self.closed:
            raise ConnectionClosed("the in-memory connection is closed")
        self._outbox.put_nowait(frame)

    async def recv(self) -> bytes:
        """The next frame from the other end."""
        if self.closed and self._inbox.empty():
            raise ConnectionClosed("the in-memory connection is closed")
        frame = await self._inbox.get()
        if frame == _CLOSED:
            self.closed = True
            raise ConnectionClosed("the other end closed the connection")
        return frame

    async def close(self) -> None:
        """Close both ends."""
        if not self.closed:
            self.closed = True
            self._outbox.put_nowait(_CLOSED)
            self._inbox.put_nowait(_CLOSED)


def memory_pair() -> tuple[MemoryConnection, MemoryConnection]:
    """Two connected ends (client, host)."""
    one: asyncio.Queue[bytes] = asyncio.Queue()
    two: asyncio.Queue[bytes] = asyncio.Queue()
    return MemoryConnection(one, two), MemoryConnection(two, one)


def memory_connector(host: RoomHostLike) -> Callable[[str], Awaitable[MemoryConnection]]:
    """A connector for :func:`matchlock.app.joining.join` that reaches ``host`` in this process:
    each call makes a pair and has the host serve its end (the URL is ignored)."""

    async def connect(url: str) -> MemoryConnection:
        client, served = memory_pair()
        task = asyncio.get_running_loop().create_task(host.handle(served))
        _serving.add(task)
        task.add_done_callback(_serving.discard)
        return client

    return connect


_serving: set[asyncio.Task[None]] = set()  # keeps the host's handlers alive until they end
