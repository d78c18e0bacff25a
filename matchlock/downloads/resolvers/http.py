"""The ``http`` and ``https`` resolver: one streamed GET (redirects aside) into the staging.

Through one :class:`aiohttp.ClientSession` per job (at most ``jobs`` connections); hashing and
writing happen on worker threads (:mod:`matchlock.downloads.sink`), the event loop only reads.

- redirects are followed by hand (at most :attr:`FetchPolicy.max_redirects`) so that each
  target's scheme is checked: a redirect to anything but an allowed http(s) URL (``file:``
  above all) is :class:`Refused`;
- a body larger than the piece is :class:`TooLarge` as soon as it is announced or exceeded,
  never stored;
- a host that refuses the connection, whose name does not resolve, or that accepts no
  connection within :attr:`FetchPolicy.connect_timeout` is :class:`HostUnreachable` and is
  remembered as down for the whole job (:mod:`matchlock.downloads.hosts`): a redirect to a host
  found down is not requested either;
- a reset or a cut mid-body, no data for :attr:`FetchPolicy.read_timeout` seconds (waiting for
  the headers included), HTTP 408, 425, 429, 5xx and 416 are :class:`Transient`; 404 and 410
  :class:`NotFound`; any other status :class:`SourceError`;
- with ``resume``, a part this URL began earlier continues with ``Range: bytes=N-``; a server
  that ignores it (200) restarts the part from zero, a wrong ``Content-Range`` is Transient;
- a piece with at least :attr:`FetchPolicy.segment_min` bytes left (32 MiB) is asked for its
  first :attr:`FetchPolicy.segment_bytes` only (``Range: bytes=N-M``); a server that answers
  with exactly that range gets the rest asked in segments, over
  :attr:`FetchPolicy.connections` connections at once, spread over this URL and the piece's
  other http(s) resolvables (:attr:`Wanted.mirrors`, those on a host not found down):
  :mod:`~matchlock.downloads.resolvers.ranges`. A server that sends the whole piece instead
  (200, or 206 to the end) is simply read to the end.

It never retries, and leaves the sha256 to the caller, but for one case: when segments came
from more than one URL and the bytes do not verify, the piece is fetched once more from this
URL alone, so that a mirror's wrong bytes are never blamed on this resolvable.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import aiohttp
from yarl import URL

from matchlock import __version__
from matchlock.downloads.hosts import host_of
from matchlock.downloads.resolvers.base import (
    HostUnreachable,
    NotFound,
    Refused,
    Resolver,
    ResolverContext,
    SourceError,
    Staging,
    TooLarge,
    Transient,
    Wanted,
)
from matchlock.downloads.resolvers.ranges import Plan, Segments
from matchlock.downloads.sink import BATCH_BYTES

__all__ = ["SCHEMES", "HttpResolver", "open_http"]

logger = logging.getLogger("matchlock.downloads")

SCHEMES = ("http", "https")
"""The schemes this resolver serves, and the only ones a redirect may lead to."""

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_TRANSIENT = frozenset({408, 425, 429})
_NOT_FOUND = frozenset({404, 410})
_MAX_CHUNKS_PER_BATCH = 256
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_USER_AGENT = f"matchlock/{__version__}"

# aiohttp stops reading a connection whose unread body passes twice this (64 KiB by default),
# and starts again once it is read: at 64 KiB that is a pause and a resume for about every
# chunk of a fast download (two epoll changes each); at 1 MiB, hardly any.
_READ_BUFFER = 1024 * 1024


@asynccontextmanager
async def open_http(context: ResolverContext) -> AsyncIterator[Resolver]:
    """The job's :class:`HttpResolver`, its connection pool closed when the job ends. Only
    connecting has an aiohttp timeout: silence is watched by :class:`_SilenceWatch`, and a
    whole download has no limit."""
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=context.jobs),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=context.policy.connect_timeout),
        read_bufsize=_READ_BUFFER,
        headers={"User-Agent": _USER_AGENT},
    ) as session:
        yield HttpResolver(session, context)


class HttpResolver:
    """Fetches http(s) resolvables through ``session``. See the module docs."""

    def __init__(self, session: aiohttp.ClientSession, context: ResolverContext) -> None:
        self._session = session
        self._urls: dict[str, URL] = {}  # each resolvable's URL parsed once for the job
        self._policy = context.policy
        self._hosts = context.hosts
        self._allowed = context.allowed_schemes

    def host(self, url: str) -> str | None:
        """``scheme://host:port`` of ``url`` (None when it is no valid URL: the request
        reports that)."""
        try:
            return host_of(self._url(url))
        except ValueError:
            return None

    def _url(self, text: str) -> URL:
        """``text`` parsed (once: the host check and the request both need it); raises
        ValueError for an invalid URL."""
        parsed = self._urls.get(text)
        if parsed is None:
            parsed = self._urls[text] = URL(text)
        return parsed

    async def fetch(self, url: str, wanted: Wanted, staging: Staging, *, resume: bool) -> None:
        """One GET of ``url`` into ``staging`` (or, for a large piece, one GET of its first
        segment and range requests for the rest, from it and its mirrors), continuing this
        URL's earlier bytes with ``resume``; see the module docs for every failure."""
        mixed = await self._fetch(url, wanted, staging, resume=resume)
        if mixed and await staging.sha256() != wanted.sha256:
            # A mirror's bytes are wrong (or this URL's: the check after this one tells).
            logger.info("%s: segments from several mirrors do not verify; again from %s alone",
                        wanted.key, url)  # fmt: skip
            await self._fetch(url, replace(wanted, mirrors=()), staging, resume=False)

    async def _fetch(self, url: str, wanted: Wanted, staging: Staging, *, resume: bool) -> bool:
        """:meth:`fetch` from ``url`` and its mirrors; True when segments came from more than
        one URL."""
        await staging.begin(resume=resume)
        if staging.size >= wanted.size:
            return False  # complete already (an earlier run got this far): only the check remains
        mixed = False
        end = self._first_segment_end(wanted, staging.size)
        watch = _SilenceWatch(self._policy.read_timeout)
        try:
            async with watch.guard(), self._get(url, wanted.key, staging.size, end) as response:
                watch.heard()
                segmented = await self._accept(response, wanted, staging, end)
                if segmented and end is not None:
                    mixed = await self._segmented(response, wanted, staging, watch, end)
                else:
                    await self._stream(response, wanted, staging, watch)
        except aiohttp.ClientPayloadError as error:
            raise Transient(_cut(staging, error)) from None
        except (aiohttp.ServerTimeoutError, TimeoutError):
            silence = f"no data for {self._policy.read_timeout:g} s"
            raise Transient(f"{silence} after {staging.size} bytes") from None
        except aiohttp.InvalidURL as error:
            raise Refused(f"invalid URL: {error}") from None
        except aiohttp.ClientError as error:
            raise Transient(_describe(error)) from None
        return mixed

    def _first_segment_end(self, wanted: Wanted, offset: int) -> int | None:
        """Where the first request should end for a segmented download (None: one request
        for the whole piece), see :mod:`~matchlock.downloads.resolvers.ranges`."""
        policy = self._policy
        left = wanted.size - offset
        if policy.connections < 2 or left < max(policy.segment_min, 2 * policy.segment_bytes):
            return None
        return offset + policy.segment_bytes

    async def _segmented(
        self,
        response: aiohttp.ClientResponse,
        wanted: Wanted,
        staging: Staging,
        watch: _SilenceWatch,
        start: int,
    ) -> bool:
        """The first segment from ``response`` (up to ``start``), the rest over several
        connections at once, spread over the URL and the piece's mirrors; True when more than
        one URL sent some."""
        policy = self._policy
        plan = Plan(
            urls=(response.url, *self._mirrors(wanted)),
            start=start,
            size=wanted.size,
            segment=policy.segment_bytes,
            connections=policy.connections,
            connect_timeout=policy.connect_timeout,
            read_timeout=policy.read_timeout,
            user_agent=_USER_AGENT,
        )
        async with Segments(plan) as segments:  # they fetch while the first one arrives here
            await self._stream(response, wanted, staging, watch)
            if staging.size != start:
                raise Transient(f"the first segment ended at byte {staging.size}, not {start}")
            await segments.feed(staging, watch.heard)
        return len(segments.sources) > 1

    def _mirrors(self, wanted: Wanted) -> list[URL]:
        """The piece's other resolvables that may serve segments: http(s), allowed, on a
        host not found down."""
        found = []
        for text in wanted.mirrors:
            try:
                mirror = URL(text)
                host = host_of(mirror)
            except ValueError:
                continue  # its own turn says why
            allowed = mirror.scheme in SCHEMES and mirror.scheme in self._allowed
            if allowed and mirror.host and self._hosts.down(host) is None:
                found.append(mirror)
        return found

    @asynccontextmanager
    async def _get(
        self, url: str, key: str, offset: int, end: int | None = None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """GET ``url`` from byte ``offset`` (up to the byte before ``end``, when given),
        following allowed redirects by hand."""
        headers = {"Accept-Encoding": "identity"}
        if end is not None:
            headers["Range"] = f"bytes={offset}-{end - 1}"
        elif offset:
            headers["Range"] = f"bytes={offset}-"
        target = self._url(url)
        for _ in range(self._policy.max_redirects + 1):
            response = await self._connect(target, key, headers)
            if response.status not in _REDIRECTS:
                try:
                    yield response
                finally:
                    response.release()
                return
            response.release()
            target = self._redirect_target(target, response)
        raise Refused(f"more than {self._policy.max_redirects} redirects")

    async def _connect(
        self, target: URL, key: str, headers: dict[str, str]
    ) -> aiohttp.ClientResponse:
        """Send the request unless ``target``'s host was found down; record it down when it
        refuses the connection, does not resolve, or does not answer the connect in time."""
        known = self._hosts.down(host_of(target))
        if known is not None:
            raise HostUnreachable(known.skip_reason())  # a redirect to a host found down
        try:
            return await self._session.get(target, headers=headers, allow_redirects=False)
        except aiohttp.ClientSSLError:
            raise  # the host answered: a TLS problem is not a host that is down
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as error:
            if isinstance(error, aiohttp.ConnectionTimeoutError):
                reason = f"no connection within {self._policy.connect_timeout:g} s"
            else:
                reason = _describe(error)
            down = self._hosts.mark_down(host_of(target), key, reason)
            raise HostUnreachable(
                f"{reason}; host {down.host} is skipped by the rest of this job"
            ) from None

    def _redirect_target(self, current: URL, response: aiohttp.ClientResponse) -> URL:
        location = response.headers.get("Location")
        if not location:
            raise SourceError(f"HTTP {response.status} redirect without a Location")
        try:
            target = current.join(URL(location))
        except ValueError:
            raise Refused(f"redirect to an invalid URL {location!r}") from None
        if target.scheme not in SCHEMES or target.scheme not in self._allowed:
            raise Refused(
                f"redirect to {str(target)[:200]!r} refused: scheme {target.scheme!r} "
                "is not allowed"
            )
        return target

    async def _accept(
        self, response: aiohttp.ClientResponse, wanted: Wanted, staging: Staging, end: int | None
    ) -> bool:
        """Check the status and headers; line the staging up with where the body starts.
        True when the server sent exactly the first segment asked for (``end``): the rest is
        then fetched in segments."""
        status = response.status
        segmented = False
        if status == 200:
            if staging.size:
                await staging.restart()  # the server ignored Range: the body starts at byte 0
        elif status == 206:
            header = response.headers.get("Content-Range", "")
            found = _CONTENT_RANGE.match(header)
            total = found and found[3]
            last = int(found[2]) if found else -1
            # Asked for a first segment, the server may still send all the rest.
            if (
                not found
                or int(found[1]) != staging.size
                or total not in ("*", str(wanted.size))
                or last not in (wanted.size - 1, -1 if end is None else end - 1)
            ):
                offset = staging.size
                await staging.restart()
                raise Transient(f"Content-Range {header!r} does not continue at byte {offset}")
            if staging.size:
                staging.continued()
            segmented = last != wanted.size - 1
        else:
            if status == 416:
                await staging.restart()
                raise Transient("HTTP 416: the server refused to resume")
            reason = f"HTTP {status} {response.reason or ''}".rstrip()
            if status in _NOT_FOUND:
                raise NotFound(reason)
            if status in _TRANSIENT or status >= 500:
                raise Transient(reason)
            raise SourceError(reason)
        length = response.content_length
        if length is not None and staging.size + length > wanted.size:
            announced = staging.size + length
            raise TooLarge(f"the server announces {announced} bytes; the piece has {wanted.size}")
        return segmented

    async def _stream(
        self,
        response: aiohttp.ClientResponse,
        wanted: Wanted,
        staging: Staging,
        watch: _SilenceWatch,
    ) -> None:
        room = wanted.size - staging.size
        received = batched = 0
        batch: list[bytes] = []
        try:
            async for chunk in _chunks(response.content):
                watch.heard()
                received += len(chunk)
                if received > room:
                    raise TooLarge(f"the server sent more than the piece's {wanted.size} bytes")
                batch.append(chunk)
                batched += len(chunk)
                if batched >= BATCH_BYTES or len(batch) >= _MAX_CHUNKS_PER_BATCH:
                    await staging.write(batch)
                    batch, batched = [], 0
        finally:
            # Also when the connection broke: what did arrive is kept for the resume.
            if batch:
                await staging.write(batch)


class _SilenceWatch:
    """Ends a request that stays silent for ``limit`` seconds (a stalled server).

    aiohttp's own ``sock_read`` timeout re-arms a timer for every chunk received, which costs
    more than the rest of the loop's work on a fast download; here a chunk only records the
    time, and a timer callback looks every quarter of the limit (a callback, not a task: a task
    per request, started and cancelled, cost 3% of the loop's time with many small pieces).
    Silence makes the guarded block raise :class:`TimeoutError`.
    """

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self._loop = asyncio.get_running_loop()
        self._last = self._loop.time()
        self._look: asyncio.TimerHandle | None = None

    def heard(self) -> None:
        """Data arrived."""
        self._last = self._loop.time()

    @asynccontextmanager
    async def guard(self) -> AsyncIterator[None]:
        """Watch the block inside; :class:`TimeoutError` when it goes silent."""
        async with asyncio.timeout(None) as deadline:
            self._look = self._loop.call_later(self.limit / 4, self._watch, deadline)
            try:
                yield
            finally:
                self._look.cancel()

    def _watch(self, deadline: asyncio.Timeout) -> None:
        if self._loop.time() - self._last >= self.limit:
            deadline.reschedule(self._loop.time())  # expires now, in the guarded block
        else:
            self._look = self._loop.call_later(self.limit / 4, self._watch, deadline)


async def _chunks(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """The body's chunks as they were received. (``iter_any`` joins what is buffered into one
    new bytes object, a copy of most of a fast download that the loop pays for.)"""
    while True:
        chunk, end_of_http_chunk = await content.readchunk()
        if chunk:
            yield chunk
        elif not end_of_http_chunk:
            return  # the end of the body


def _cut(staging: Staging, error: Exception) -> str:
    cause = error.__cause__ or error
    size = staging.wanted.size
    return f"the connection broke after {staging.size} of {size} bytes ({_describe(cause)})"


def _describe(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
