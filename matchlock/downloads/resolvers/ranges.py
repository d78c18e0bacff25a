"""A large piece over several connections at once: byte ranges fetched by worker threads,
handed to the staging in order (the http resolver's segmented download).

The http resolver (:mod:`~matchlock.downloads.resolvers.http`) asks for a large piece's first
segment with a bounded ``Range``; when the server answers 206 with exactly that range, the rest
of the piece, from :attr:`Plan.start` to its end, is fetched here: cut into segments of
:attr:`Plan.segment` bytes, taken lowest first by :attr:`Plan.connections` worker threads, each
on its own keep-alive connection to one of the plan's URLs (the resolvable after its redirects,
and the piece's other mirrors that answered the same way). Each thread reads a segment's body
straight into one buffer of a small pool (``recv_into``: one copy from the kernel, the GIL
released), which the event loop then hands to :meth:`Staging.write` strictly in order, so that
the ``.part`` file only ever holds a contiguous prefix of the piece and the running sha256
covers it byte after byte: a resumed part is continued exactly as a single-connection one.

The pool holds a buffer for each connection, one for each segment in the staging's hands
(:data:`~matchlock.downloads.sink.IN_HAND`) and one for the segment being handed over; a thread
waits for a free one before it takes a segment, so memory stays at a few segments whatever the
piece's size (a slow connection
holding the next segment in line makes the others wait, never grow). A thread left waiting
looks at that segment every half second: when it has been in flight for four times as long as
segments usually take (and at least two seconds), its connection is cut, as too slow (a slow
mirror would otherwise set the pace of the whole piece). A connection that fails
(refused, reset, silent for :attr:`Plan.read_timeout`, a status or ``Content-Range`` that is
not the range asked for, a body shorter than it) gives its segment back, for the others to
take, and ends; when every connection has ended with segments left, :meth:`Segments.feed`
raises :class:`Transient` with the last reason, and what was already written in order stays in
the part for the next attempt.

This module never verifies the sha256 (the caller does), never writes the file itself (the
staging does, in order) and never follows a redirect (the plan's URLs are final).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import http.client
import socket
import ssl
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType

from yarl import URL

from matchlock.downloads.resolvers.base import Staging, Transient
from matchlock.downloads.sink import IN_HAND

__all__ = ["Plan", "Segments"]

_SLOW = 4
_SLOW_MIN = 2.0
"""A segment in flight for ``_SLOW`` times the usual segment's time, and at least ``_SLOW_MIN``
seconds, while other connections wait for it, is let go (its connection is cut)."""
_LOOK_EVERY = 0.5
"""How often, in seconds, a connection with nothing to do looks for such a segment."""


@dataclass(frozen=True)
class Plan:
    """What to fetch: bytes ``start`` up to ``size`` (the piece's pinned size) of the piece
    that every URL of ``urls`` serves, in segments of ``segment`` bytes, over ``connections``
    connections spread over the URLs in turn."""

    urls: Sequence[URL]
    start: int
    size: int
    segment: int
    connections: int
    connect_timeout: float
    read_timeout: float
    user_agent: str

    @property
    def count(self) -> int:
        """How many segments the plan's bytes make."""
        return -(-(self.size - self.start) // self.segment)

    def span(self, index: int) -> tuple[int, int]:
        """The first byte of segment ``index`` and the byte after its last."""
        first = self.start + index * self.segment
        return first, min(first + self.segment, self.size)


class _Refused(Exception):
    """A server's answer to a range request that is not that range."""


class Segments:
    """The worker threads of one segmented download (see the module docs). Use as
    ``async with Segments(plan) as segments: ... await segments.feed(staging)``: entering
    starts the threads (they fetch while the caller writes the piece's first segment),
    leaving stops them, closes their connections and waits until every thread has ended."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.reason = ""
        """Why the last connection that failed ended ("" while none did)."""
        self.sources: set[URL] = set()
        """The URLs that delivered at least one segment."""
        self._loop = asyncio.get_running_loop()
        self._lock = threading.Condition()
        self._pending = list(range(plan.count))  # a heap: the lowest segment is taken first
        buffers = plan.connections + IN_HAND + 1  # and the one being handed over
        self._free = [bytearray(plan.segment) for _ in range(buffers)]
        self._in_flight = 0
        self._fetching: dict[int, tuple[float, socket.socket]] = {}  # since when, over what
        self._took: list[float] = []  # seconds each segment that arrived took
        self._let_go: set[int] = set()  # segments cut for being too slow
        self._stopped = False
        self._sockets: set[socket.socket] = set()  # to shut down, waking blocked threads
        self._socket_of: dict[int, socket.socket] = {}  # by id() of its connection
        self._running = 0  # threads not yet ended, as the loop saw them end
        self._arrived: dict[int, bytearray] = {}
        self._wake = asyncio.Event()
        self._threads: list[threading.Thread] = []
        self._all_ended = self._loop.create_future()

    async def __aenter__(self) -> Segments:
        count = min(self.plan.connections, self.plan.count)
        self._running = count
        for index in range(count):
            url = self.plan.urls[index % len(self.plan.urls)]
            thread = threading.Thread(
                target=self._connection, args=(url,), name=f"matchlock-range-{index}", daemon=True
            )
            self._threads.append(thread)
            thread.start()
        if not count:
            self._all_ended.set_result(None)
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop()
        cancelled = False
        while not self._all_ended.done():
            try:
                await asyncio.shield(self._all_ended)
            except asyncio.CancelledError:
                cancelled = True  # the threads end within moments (their sockets are shut)
        for thread in self._threads:
            thread.join()  # each has only its return left
        if cancelled:
            raise asyncio.CancelledError

    async def feed(self, staging: Staging, heard: Callable[[], None]) -> None:
        """Write every segment of the plan into ``staging``, in order, as they arrive (calling
        ``heard`` while connections live: the caller's watch for silence is theirs to keep)."""
        in_hand: deque[bytearray] = deque()  # written, perhaps not yet out of the lanes' hands
        for index in range(self.plan.count):
            buffer = await self._next(index, heard)
            heard()
            first, end = self.plan.span(index)
            await staging.write([memoryview(buffer)[: end - first]])
            in_hand.append(buffer)
            if len(in_hand) > IN_HAND:  # the write above waited until this one was done
                self._recycle(in_hand.popleft())

    async def _next(self, index: int, heard: Callable[[], None]) -> bytearray:
        while index not in self._arrived:
            if not self._running:  # each thread's arrivals were called before its end
                raise Transient(
                    f"every connection of the segmented download ended ({self.reason}); "
                    f"{index} of {self.plan.count} segments after byte {self.plan.start} arrived"
                )
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), _LOOK_EVERY)
            heard()  # while a thread lives: each connection's socket times its own silence
        return self._arrived.pop(index)

    # -- on the loop, called by the threads through call_soon_threadsafe

    def _arrive(self, index: int, buffer: bytearray, url: URL) -> None:
        self._arrived[index] = buffer
        self.sources.add(url)
        self._wake.set()

    def _ended(self, reason: str) -> None:
        self._running -= 1
        if not self._running:
            self._all_ended.set_result(None)
        if reason:
            self.reason = reason
        self._wake.set()

    # -- shared

    def _recycle(self, buffer: bytearray) -> None:
        with self._lock:
            self._free.append(buffer)
            self._lock.notify_all()

    def _stop(self) -> None:
        with self._lock:
            self._stopped = True
            self._lock.notify_all()
            for sock in self._sockets:
                with contextlib.suppress(OSError):  # not connected yet, or closed already
                    sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv

    # -- on a worker thread

    def _take(self) -> tuple[int, bytearray] | None:
        """The lowest segment nobody fetches and a free buffer; None once none is left."""
        with self._lock:
            while not self._stopped:
                if self._pending and self._free:
                    self._in_flight += 1
                    return heapq.heappop(self._pending), self._free.pop()
                if not self._pending and not self._in_flight:
                    return None
                self._let_go_of_a_straggler()
                self._lock.wait(_LOOK_EVERY)  # for a buffer, or for a segment given back
            return None

    def _let_go_of_a_straggler(self) -> None:
        """Cut the connection fetching the lowest segment in flight when it takes far longer
        than segments usually do (call holding the lock, from a thread with nothing to do).

        Every other connection waits for that segment (their buffers wait behind it), so a
        slow mirror would set the pace of the whole piece; cut, its connection fails like any
        other and ends, and the segment goes back to the others."""
        if len(self._took) < 2 or not self._fetching:
            return
        index = min(self._fetching)
        began, sock = self._fetching[index]
        usual = statistics.median(self._took)
        if index in self._let_go or time.monotonic() - began < max(_SLOW_MIN, _SLOW * usual):
            return
        self._let_go.add(index)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    def _began(self, index: int, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            self._fetching[index] = (time.monotonic(), self._socket_of[id(connection)])

    def _settle(self, index: int, buffer: bytearray, url: URL, *, arrived: bool) -> None:
        with self._lock:
            self._in_flight -= 1
            began = self._fetching.pop(index, None)
            if arrived and began is not None:
                self._took.append(time.monotonic() - began[0])
            if not arrived:
                heapq.heappush(self._pending, index)
                self._free.append(buffer)
            self._lock.notify_all()
        if arrived:
            self._loop.call_soon_threadsafe(self._arrive, index, buffer, url)

    def _connection(self, url: URL) -> None:
        """One connection's life: segments, one after another, until none is left."""
        connection: http.client.HTTPConnection | None = None
        reason = ""
        try:
            while (taken := self._take()) is not None:
                index, buffer = taken
                try:
                    connection = connection or self._open(url)
                    self._began(index, connection)
                    self._get(connection, url, index, buffer)
                except (OSError, http.client.HTTPException, _Refused) as error:
                    self._settle(index, buffer, url, arrived=False)
                    slow = "far slower than the other connections" if index in self._let_go else ""
                    reason = f"{url.host}:{url.port}: {slow or _describe(error)}"
                    return
                self._settle(index, buffer, url, arrived=True)
                if connection.sock is None:  # the server closed it after the response
                    self._close(connection)
                    connection = None
        finally:
            if connection is not None:
                self._close(connection)
            self._loop.call_soon_threadsafe(self._ended, reason)

    def _open(self, url: URL) -> http.client.HTTPConnection:
        host, port = url.raw_host or "", url.port
        timeout = self.plan.connect_timeout
        connection: http.client.HTTPConnection
        if url.scheme == "https":
            context = ssl.create_default_context()
            connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
        else:
            connection = http.client.HTTPConnection(host, port, timeout=timeout)
        connection.connect()
        sock: socket.socket = connection.sock
        sock.settimeout(self.plan.read_timeout)  # silence, from now on
        with self._lock:
            if self._stopped:
                connection.close()
                raise _Refused("stopped")
            self._sockets.add(sock)
        self._socket_of[id(connection)] = sock
        return connection

    def _close(self, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            self._sockets.discard(self._socket_of.pop(id(connection)))
        connection.close()

    def _get(
        self, connection: http.client.HTTPConnection, url: URL, index: int, buffer: bytearray
    ) -> None:
        """Fetch segment ``index`` into ``buffer``; :class:`_Refused` for a wrong answer."""
        first, end = self.plan.span(index)
        headers = {
            "Range": f"bytes={first}-{end - 1}",
            "Accept-Encoding": "identity",
            "User-Agent": self.plan.user_agent,
        }
        connection.request("GET", url.raw_path_qs, headers=headers)
        response = connection.getresponse()
        expected = f"bytes {first}-{end - 1}/"
        found = response.getheader("Content-Range") or ""
        if response.status != 206 or found not in (expected + "*", f"{expected}{self.plan.size}"):
            raise _Refused(
                f"HTTP {response.status} with Content-Range {found!r} to a request for "
                f"bytes {first}-{end - 1}"
            )
        if response.length is not None and response.length != end - first:
            raise _Refused(f"Content-Length {response.length} for bytes {first}-{end - 1}")
        view = memoryview(buffer)[: end - first]
        got = 0
        while got < len(view):
            count = response.readinto(view[got:])
            if not count:
                raise _Refused(f"the body for bytes {first}-{end - 1} ended after {got} bytes")
            got += count
        if response.read(1):
            raise _Refused(f"more than the {end - first} bytes asked for, from byte {first}")


def _describe(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "no data in time"
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
