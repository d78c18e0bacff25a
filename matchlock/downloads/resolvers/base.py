"""The resolver seam: what a resolver is given, what it must do, and how it says why it failed.

A **resolver** turns one resolvable's URL, for the schemes it is registered under
(:mod:`matchlock.downloads.resolvers.registry`), into the bytes of one piece, written into the
piece's :class:`Staging` (its ``.part`` file in the cache's ``.matchlock/tmp/``, held under the
content's lock). It never verifies, installs or retries: the caller
(:class:`matchlock.downloads.fetch.Fetcher`) checks size and sha256 once the resolver returns,
the piece installer unpacks and publishes, and the piece's turns decide what to try next from the
*type* of the failure alone:

::

    ResolveFailed                 the resolvable did not yield the piece; ``reason`` says why
    ├── HostUnreachable           the host is down (refused, unresolvable, no connect in time) or
    │                             was found down earlier in the job: never retried
    ├── NotFound                  the source says it has no such thing (HTTP 404/410, no file)
    ├── Transient                 trying the same resolvable again may help (a cut, a stall, 5xx)
    ├── Corrupt                   the bytes are not the piece (sha256 or size mismatch)
    │   └── CorruptAfterResume    ... after continuing an earlier part: retried once from zero
    ├── TooLarge                  the source announces or sends more than the pinned size
    ├── Refused                   the resolvable is not acceptable (its scheme, a redirect, an
    │                             invalid URL, a file that is not a regular file)
    └── SourceError               any other answer that will not change (HTTP 403, ...)

A resolver raises exactly these for a bad source (an :class:`OSError` on the local disk is not a
source's fault: it propagates, and the piece stops). Cancellation (``asyncio.CancelledError``)
may arrive at any ``await``: a resolver keeps nothing open after it, and everything it wrote is
in the ``.part`` file, which is the documented temporary place (a later run resumes it).

This module holds only types and the bounded staging; it does no network IO.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol, TypeVar

from matchlock.core.errors import UsageError
from matchlock.downloads.hosts import Hosts
from matchlock.downloads.sink import PartFile

__all__ = [
    "Corrupt",
    "CorruptAfterResume",
    "FetchPolicy",
    "HostUnreachable",
    "NotFound",
    "Progress",
    "Refused",
    "ResolveFailed",
    "Resolver",
    "ResolverContext",
    "ResolverFactory",
    "SourceError",
    "Staging",
    "TooLarge",
    "Transient",
    "Wanted",
]

_T = TypeVar("_T")

Progress = Callable[[int], None]
"""Called with the bytes of the piece held so far from the current resolvable."""


class ResolveFailed(Exception):
    """One resolvable did not yield the piece; ``reason`` is what a person can act on. Raise
    one of the subclasses: the piece's turns read the type, never the text."""

    def __init__(self, reason: str, source: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.source = source
        """Who failed, when that is not the resolvable's URL itself (``room:bob``)."""


class HostUnreachable(ResolveFailed):
    """The resolvable's host is down, now or earlier in this job; it is not tried again."""


class NotFound(ResolveFailed):
    """The source answered that it does not hold this (HTTP 404 or 410, no such file)."""


class Transient(ResolveFailed):
    """A failure that trying the same resolvable again may mend: it is tried again after the
    piece's other resolvables, up to :attr:`FetchPolicy.attempts` requests in all."""


class Corrupt(ResolveFailed):
    """The bytes that arrived are not the piece: sha256 (or size) differs from the pin."""


class CorruptAfterResume(Corrupt, Transient):
    """Not the piece, but only after continuing bytes written earlier: the part was emptied,
    and the resolvable is tried once more from zero (the old bytes may have been the bad ones)."""


class TooLarge(ResolveFailed):
    """The source announced or sent more bytes than the piece's pinned size; what lies beyond
    the size was never written."""


class Refused(ResolveFailed):
    """The resolvable itself is not acceptable: a scheme not allowed, a refused redirect, an
    invalid URL, a file that is not a regular file on this machine."""


class SourceError(ResolveFailed):
    """The source answered with a permanent error that is none of the above (HTTP 403)."""


@dataclass(frozen=True)
class FetchPolicy:
    """How hard to try one resolvable. Times are in seconds."""

    attempts: int = 4
    """Requests per resolvable, the first included, before it is given up (a host found down
    is never asked twice)."""
    backoff: float = 0.5
    """The least time between a resolvable's transient failure and its first retry (time spent
    on the piece's other resolvables counts); it doubles for each later retry."""
    backoff_max: float = 8.0
    """The longest pause between two attempts."""
    connect_timeout: float = 15.0
    """The longest wait for a connection."""
    read_timeout: float = 30.0
    """The longest silence in the middle of a response (a stalled server)."""
    max_redirects: int = 5
    """Redirects followed for one request."""
    connections: int = 4
    """Connections at once for one large piece whose server answers byte ranges (1: every
    piece over one connection), see :mod:`matchlock.downloads.resolvers.ranges`."""
    segment_min: int = 32 * 1024 * 1024
    """The fewest bytes left to fetch of a piece that make it worth several connections."""
    segment_bytes: int = 8 * 1024 * 1024
    """The bytes of one range request of a segmented download (``connections +``
    :data:`~matchlock.downloads.sink.IN_HAND` ``+ 1`` buffers of this size are held in memory).
    Each segment costs the event loop one hand-off to the hash and the writer, and the server
    one request: in ``benchmarks/bench_download.py`` (1 GiB from a loopback server on the same
    two cores), 16 MiB segments cost the server 0.19-0.21 s of CPU against 0.26-0.29 s in
    8 MiB ones, but the pace of either swung with the disk's (0.6 to 1.5 GB/s from one run to
    the next) far more than it differed: 8 MiB keeps memory at half."""

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.max_redirects < 0:
            raise UsageError("a fetch policy needs attempts >= 1 and max_redirects >= 0")
        if self.connections < 1 or self.segment_bytes < 1 or self.segment_min < 0:
            raise UsageError(
                "a fetch policy needs connections >= 1, segment_bytes >= 1 and segment_min >= 0"
            )
        if (
            min(self.backoff, self.backoff_max) < 0
            or min(self.connect_timeout, self.read_timeout) <= 0
        ):
            raise UsageError("a fetch policy's pauses cannot be negative, its timeouts must be > 0")

    def pause(self, retry: int) -> float:
        """The pause before retry number ``retry`` (0 for the first)."""
        return float(min(self.backoff * 2**retry, self.backoff_max))


@dataclass(frozen=True)
class Wanted:
    """The piece a resolver is asked for: its ``collection/piece`` key and its pinned content
    (the sha256 and size of the bytes, which bound everything the resolver may write)."""

    key: str
    sha256: str
    size: int
    mirrors: tuple[str, ...] = ()
    """The piece's other resolvables, in the config's order: a resolver may fetch parts of the
    piece from them at the same time (:mod:`~matchlock.downloads.resolvers.ranges`)."""


@dataclass(frozen=True)
class ResolverContext:
    """What one download job gives every resolver it opens: the fetch ``policy``, the job's
    memory of ``hosts`` found down (a resolver marks a host it finds down, and checks one it is
    redirected to), the ``allowed_schemes``, and ``jobs``, the pieces fetched at a time."""

    policy: FetchPolicy
    hosts: Hosts
    allowed_schemes: frozenset[str]
    jobs: int


class Staging:
    """Where a resolver writes a piece's bytes: the piece's ``.part`` file (see
    :class:`~matchlock.downloads.sink.PartFile`), bounded by the pinned size and reporting
    progress.

    :meth:`write` refuses, with :class:`TooLarge`, a batch that would take the part past
    ``wanted.size``, before a byte of it is written. ``progress`` is called after
    :meth:`begin` and every :meth:`write` with the bytes held, and never with less than it was
    called with before (bytes dropped by :meth:`restart` and fetched again are not reported
    twice).
    """

    def __init__(self, part: PartFile, wanted: Wanted, progress: Progress, source: str) -> None:
        self.wanted = wanted
        self.source = source
        """The URL being fetched, remembered by the part (only its own bytes are resumed)."""
        self._part = part
        self._progress = progress
        self._reported = -1

    @property
    def size(self) -> int:
        """Bytes held so far."""
        return self._part.size

    async def begin(self, *, resume: bool) -> int:
        """Start writing; with ``resume``, continue the bytes this same source wrote earlier.
        Returns the offset the source must continue from (0 without ``resume``)."""
        offset = await self._part.begin(resume=resume, source=self.source)
        self._report()
        return offset

    def continued(self) -> None:
        """Say that the source continues the bytes held (a resumed download): those bytes are
        then only trusted through the final sha256, see :class:`CorruptAfterResume`."""
        self._part.resumed_from = self._part.size

    async def write(self, chunks: Sequence[bytes | memoryview]) -> None:
        """Append ``chunks`` (hashed as they are written); :class:`TooLarge` beyond the size.
        They must stay unchanged until :data:`~matchlock.downloads.sink.IN_HAND` more
        :meth:`write` calls returned, or any other call did."""
        count = sum(len(chunk) for chunk in chunks)
        if self._part.size + count > self.wanted.size:
            raise TooLarge(f"the source sent more than the piece's {self.wanted.size} bytes")
        await self._part.write(chunks)
        self._report()

    async def restart(self) -> None:
        """Drop every byte held (the source starts again from byte 0)."""
        await self._part.restart()

    async def sha256(self) -> str:
        """The sha256 of the bytes held, once every write is done."""
        await self._part.drain()
        return self._part.hexdigest()

    def run(self, func: Callable[..., _T], *args: object) -> asyncio.Future[_T]:
        """Run blocking ``func(*args)`` (a local read) on the job's worker threads, as work on
        this content: releasing the content's lock waits for it, even after a cancellation."""
        return self._part.held.run(func, *args)

    def _report(self) -> None:
        if self._part.size > self._reported:
            self._reported = self._part.size
            self._progress(self._reported)


class Resolver(Protocol):
    """Obtains pieces for the URL schemes it is registered under. One instance serves a whole
    job (every piece, concurrently); it is made by a :data:`ResolverFactory`."""

    def host(self, url: str) -> str | None:
        """The host serving ``url``, the unit a job remembers as down (``scheme://host:port``
        for http), or None when the URL has none to remember (``file:``, an invalid URL). The
        caller skips the resolvable, without calling :meth:`fetch`, while that host is down."""
        ...

    async def fetch(self, url: str, wanted: Wanted, staging: Staging, *, resume: bool) -> None:
        """Write the bytes ``url`` holds for ``wanted`` into ``staging``: first
        :meth:`Staging.begin` (with ``resume`` when the caller allows continuing this source's
        earlier bytes), then :meth:`Staging.write` as they arrive, until the source ends.

        Raise a :class:`ResolveFailed` subclass for a bad source (a source larger than the
        pin as soon as that is known: :class:`TooLarge`). Returning says only that the source
        ended; the caller verifies size and sha256 afterwards.
        """
        ...


ResolverFactory = Callable[[ResolverContext], AbstractAsyncContextManager[Resolver]]
"""Opens a resolver for one job (its connection pool, say) and closes it when the job ends."""
