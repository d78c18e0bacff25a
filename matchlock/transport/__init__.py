"""Transports: they carry frames between a room member and the host, and nothing else.

Every transport offers the same :class:`Connection` (one frame in, one frame out) and a way to
listen (hand each accepted connection to :meth:`matchlock.app.hosting.RoomHost.handle`) and to
connect (give the client a :class:`Connection`). No protocol logic lives in a transport: the
host and the client are :mod:`matchlock.core.host` and :mod:`matchlock.core.client`.

Transports: ``ws://`` (:mod:`matchlock.transport.ws`), ``tcp://`` (newline-delimited JSON,
:mod:`matchlock.transport.tcp`), ``lan://ROOM_ID`` (UDP discovery of a TCP host,
:mod:`matchlock.transport.lan`) and in-memory (:mod:`matchlock.transport.memory`). Each one
with a URL is a :class:`~matchlock.transport.base.Transport` registered by scheme in
:data:`matchlock.transport.connect.TRANSPORTS` (:mod:`matchlock.transport.registry`), which
:func:`~matchlock.transport.connect.open_connection` and
:func:`~matchlock.transport.connect.listen` look URLs up in; docs/adding-a-transport.md says
how to add one.

Besides moving frames, a network transport keeps its link alive (keepalives no frame ever
sees), closes a link on which nothing arrived for the idle timeout, and refuses connections
over the caps at accept, with the numbers of its handler's
:class:`~matchlock.transport.limits.ConnectionLimiter` (:mod:`matchlock.transport.limits`).
"""

from __future__ import annotations

from typing import Protocol

from matchlock.core.errors import MatchlockError

__all__ = ["Connection", "ConnectionClosed", "FrameTooLarge"]


class ConnectionClosed(MatchlockError):
    """The connection is closed (by either side); no more frames."""


class FrameTooLarge(ConnectionClosed):
    """The peer sent a frame over the transport's limit; nothing more is read from it. The host
    records the refusal and closes the connection (after sending the reason, where it can)."""

    def __init__(self, peer: str, limit: int) -> None:
        self.limit = limit
        super().__init__(f"{peer} sent a frame over {limit} bytes")


class Connection(Protocol):
    """A message-oriented, ordered, reliable duplex connection."""

    def send_nowait(self, frame: bytes) -> None:
        """Queue one frame without waiting. Raises :class:`ConnectionClosed` if closed. A peer
        that does not keep up is disconnected by the transport (its buffer is bounded)."""

    async def recv(self) -> bytes:
        """The next frame; raises :class:`ConnectionClosed` when there are no more."""

    async def close(self) -> None:
        """Close the connection (frames already queued are still delivered)."""
