"""Getting one resolvable's bytes into a piece's ``.part`` file, and checking them.

:meth:`Fetcher.fetch` succeeds only when the part holds exactly the piece: as many bytes as its
``size`` and the same sha256. Every other outcome raises :class:`FetchFailed` with a reason a
person can act on; the caller records it and moves to the next resolvable.

http and https (:mod:`aiohttp`, streaming; hashing and writing on a worker thread, see
:mod:`matchlock.downloads.sink`):

- a scheme the caller does not allow is refused without a request; redirects are followed by
  hand (at most :attr:`FetchPolicy.max_redirects`) so that each target's scheme is checked, and a
  redirect to anything but an allowed http(s) URL (``file:`` above all) is refused;
- a body larger than the piece is refused as soon as it is announced or exceeded, never stored;
- a host that refuses the connection, whose name does not resolve, or that accepts no
  connection within :attr:`FetchPolicy.connect_timeout` fails the resolvable at once and is
  remembered as down for the whole job (:mod:`matchlock.downloads.hosts`): a resolvable, or a
  redirect, to a host found down is not requested;
- other transient failures (a reset or a cut mid-body, no data for
  :attr:`FetchPolicy.read_timeout` seconds, waiting for the headers included, HTTP 408, 425,
  429 and 5xx) are marked ``transient``: the caller may try the resolvable again, up to
  :attr:`FetchPolicy.attempts` requests in all (see :mod:`matchlock.downloads.piece` for when);
- a retry, or a ``.part`` left by an earlier run, resumes with ``Range: bytes=N-``; a server
  that ignores it (200) or refuses it (416) restarts the part from zero. Resumed bytes are only
  trusted through the final sha256: when it fails after a resume, the download restarts from
  zero once more before the resolvable is given up, in case the old bytes were the bad ones.

``file:`` URLs (a path on this machine; host empty or ``localhost``; relative paths are taken
from the working directory) are copied the same way; only regular files are read.
"""

from __future__ import annotations

import asyncio
import os
import re
import stat
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit
from urllib.request import url2pathname

import aiohttp
from yarl import URL

from matchlock.config import Piece
from matchlock.downloads.hosts import Hosts
from matchlock.downloads.sink import BATCH_BYTES, PartFile
from matchlock.errors import UsageError

__all__ = ["FetchFailed", "FetchPolicy", "Fetcher", "Progress"]

Progress = Callable[[int], None]
"""Called with the bytes of the piece held so far from the current resolvable."""

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_TRANSIENT = frozenset({408, 425, 429})
_MAX_CHUNKS_PER_BATCH = 256
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


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

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.max_redirects < 0:
            raise UsageError("a fetch policy needs attempts >= 1 and max_redirects >= 0")
        if (
            min(self.backoff, self.backoff_max) < 0
            or min(self.connect_timeout, self.read_timeout) <= 0
        ):
            raise UsageError("a fetch policy's pauses cannot be negative, its timeouts must be > 0")

    def pause(self, retry: int) -> float:
        """The pause before retry number ``retry`` (0 for the first)."""
        return float(min(self.backoff * 2**retry, self.backoff_max))

    def client_timeout(self) -> aiohttp.ClientTimeout:
        """The :mod:`aiohttp` timeouts these settings mean: only connecting. There is no limit
        on a whole download, and silence is watched by :class:`_SilenceWatch`."""
        return aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout)


class FetchFailed(Exception):
    """One resolvable did not yield the piece: ``reason`` says why; ``transient`` says whether
    trying the same resolvable again could help (never for a host found down)."""

    def __init__(self, reason: str, *, transient: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient


class Fetcher:
    """Fetches resolvables through one shared :class:`aiohttp.ClientSession`; ``hosts`` is the
    job's memory of hosts found down."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        policy: FetchPolicy,
        allowed_schemes: Collection[str],
        hosts: Hosts,
    ) -> None:
        self._session = session
        self.policy = policy
        self._allowed = frozenset(allowed_schemes)
        self._hosts = hosts

    async def fetch(
        self, url: str, key: str, piece: Piece, part: PartFile, progress: Progress, *, resume: bool
    ) -> None:
        """Fill ``part`` with exactly ``piece`` (addressed ``key``) from ``url`` in one request
        (redirects aside), or raise :class:`FetchFailed`.

        With ``resume``, bytes already in the part (from an earlier run, or an earlier attempt
        on this same resolvable) are continued.
        """
        scheme = urlsplit(url).scheme
        if scheme not in self._allowed:
            allowed = ", ".join(sorted(self._allowed)) or "none"
            raise FetchFailed(f"scheme {scheme!r} is not allowed (allowed: {allowed})")
        if scheme == "file":
            await self._copy_file(url, piece, part, progress)
            await self._check(piece, part)
            return
        self._skip_if_down(url)  # before the part is touched: it may hold another's bytes
        await part.begin(resume=resume, source=url)
        progress(part.size)
        await self._http_attempt(url, key, piece, part, progress)
        await self._check(piece, part)

    async def _check(self, piece: Piece, part: PartFile) -> None:
        """Accept the part only if it is the piece; a doubtful resume restarts from zero."""
        await part.drain()
        if part.size > piece.size:
            await part.restart()
            raise FetchFailed("the partial download is larger than the piece", transient=True)
        digest = part.hexdigest()
        if part.size == piece.size and digest == piece.sha256:
            return
        if part.size < piece.size:
            got = f"the body ended after {part.size} of {piece.size} bytes"
            raise FetchFailed(got, transient=True)
        resumed = part.resumed_from
        await part.restart()  # never keep bytes known to be wrong
        if resumed:
            reason = f"sha256 mismatch after resuming at byte {resumed}; starting again from 0"
            raise FetchFailed(reason, transient=True)
        raise FetchFailed(f"sha256 is {digest}, expected {piece.sha256}")

    async def _http_attempt(
        self, url: str, key: str, piece: Piece, part: PartFile, progress: Progress
    ) -> None:
        if part.size >= piece.size:
            return  # complete already (an earlier run got this far): only the check remains
        watch = _SilenceWatch(self.policy.read_timeout)
        try:
            async with watch.guard(), self._get(url, key, part.size) as response:
                watch.heard()
                await self._accept(response, piece, part)
                await self._stream(response, piece, part, progress, watch)
        except aiohttp.ClientPayloadError as error:
            raise FetchFailed(_cut(part, piece, error), transient=True) from None
        except (aiohttp.ServerTimeoutError, TimeoutError):
            silence = f"no data for {self.policy.read_timeout:g} s"
            raise FetchFailed(f"{silence} after {part.size} bytes", transient=True) from None
        except aiohttp.InvalidURL as error:
            raise FetchFailed(f"invalid URL: {error}") from None
        except aiohttp.ClientError as error:
            raise FetchFailed(_describe(error), transient=True) from None

    @asynccontextmanager
    async def _get(self, url: str, key: str, offset: int) -> AsyncIterator[aiohttp.ClientResponse]:
        """GET ``url`` from byte ``offset``, following allowed redirects by hand."""
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        target = URL(url)
        for _ in range(self.policy.max_redirects + 1):
            response = await self._connect(target, key, headers)
            if response.status not in _REDIRECTS:
                try:
                    yield response
                finally:
                    response.release()
                return
            response.release()
            target = self._redirect_target(target, response)
        raise FetchFailed(f"more than {self.policy.max_redirects} redirects")

    async def _connect(
        self, target: URL, key: str, headers: dict[str, str]
    ) -> aiohttp.ClientResponse:
        """Send the request unless ``target``'s host was found down; record it down when it
        refuses the connection, does not resolve, or does not answer the connect in time."""
        known = self._hosts.down(target)
        if known is not None:
            raise FetchFailed(known.skip_reason())  # a redirect to a host found down
        try:
            return await self._session.get(target, headers=headers, allow_redirects=False)
        except aiohttp.ClientSSLError:
            raise  # the host answered: a TLS problem is not a host that is down
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as error:
            if isinstance(error, aiohttp.ConnectionTimeoutError):
                reason = f"no connection within {self.policy.connect_timeout:g} s"
            else:
                reason = _describe(error)
            down = self._hosts.mark_down(target, key, reason)
            raise FetchFailed(
                f"{reason}; host {down.host} is skipped by the rest of this job"
            ) from None

    def _skip_if_down(self, url: str) -> None:
        try:
            known = self._hosts.down(URL(url))
        except ValueError:
            return  # the request reports the invalid URL
        if known is not None:
            raise FetchFailed(known.skip_reason())

    def _redirect_target(self, current: URL, response: aiohttp.ClientResponse) -> URL:
        location = response.headers.get("Location")
        if not location:
            raise FetchFailed(f"HTTP {response.status} redirect without a Location")
        try:
            target = current.join(URL(location))
        except ValueError:
            raise FetchFailed(f"redirect to an invalid URL {location!r}") from None
        if target.scheme not in ("http", "https") or target.scheme not in self._allowed:
            raise FetchFailed(
                f"redirect to {str(target)[:200]!r} refused: scheme {target.scheme!r} "
                "is not allowed"
            )
        return target

    async def _accept(self, response: aiohttp.ClientResponse, piece: Piece, part: PartFile) -> None:
        """Check the status and headers; line the part up with where the body starts."""
        status = response.status
        if status == 200:
            if part.size:
                await part.restart()  # the server ignored Range: the body starts at byte 0
        elif status == 206:
            header = response.headers.get("Content-Range", "")
            found = _CONTENT_RANGE.match(header)
            total = found and found[3]
            if not found or int(found[1]) != part.size or total not in ("*", str(piece.size)):
                offset = part.size
                await part.restart()
                reason = f"Content-Range {header!r} does not continue at byte {offset}"
                raise FetchFailed(reason, transient=True)
            part.resumed_from = part.size  # these bytes are only trusted through the sha256
        elif status == 416:
            await part.restart()
            raise FetchFailed("HTTP 416: the server refused to resume", transient=True)
        else:
            reason = f"HTTP {status} {response.reason or ''}".rstrip()
            raise FetchFailed(reason, transient=status in _TRANSIENT or status >= 500)
        length = response.content_length
        if length is not None and part.size + length > piece.size:
            announced = part.size + length
            raise FetchFailed(f"the server announces {announced} bytes; the piece has {piece.size}")

    async def _stream(
        self,
        response: aiohttp.ClientResponse,
        piece: Piece,
        part: PartFile,
        progress: Progress,
        watch: _SilenceWatch,
    ) -> None:
        room = piece.size - part.size
        received = batched = 0
        batch: list[bytes] = []
        try:
            async for chunk in _chunks(response.content):
                watch.heard()
                received += len(chunk)
                if received > room:
                    raise FetchFailed(f"the server sent more than the piece's {piece.size} bytes")
                batch.append(chunk)
                batched += len(chunk)
                if batched >= BATCH_BYTES or len(batch) >= _MAX_CHUNKS_PER_BATCH:
                    await part.write(batch)
                    progress(part.size)
                    batch, batched = [], 0
        finally:
            # Also when the connection broke: what did arrive is kept for the resume.
            if batch:
                await part.write(batch)
                progress(part.size)

    async def _copy_file(self, url: str, piece: Piece, part: PartFile, progress: Progress) -> None:
        path = _local_path(url)
        await part.begin(resume=False, source=url)
        progress(0)
        try:
            # Through the content's lock, so that a cancelled copy still ends its reads
            # before anything is closed.
            source = await part.held.run(_open_regular, path)
            with source:
                size = os.fstat(source.fileno()).st_size
                if size != piece.size:
                    raise FetchFailed(f"{path} has {size} bytes; the piece has {piece.size}")
                while chunk := await part.held.run(source.read, BATCH_BYTES):
                    if part.size + len(chunk) > piece.size:
                        raise FetchFailed(f"{path} grew while it was read")
                    await part.write([chunk])
                    progress(part.size)
        except OSError as error:
            raise FetchFailed(f"cannot read {path}: {error.strerror or error}") from None


class _SilenceWatch:
    """Ends a request that stays silent for ``limit`` seconds (a stalled server).

    aiohttp's own ``sock_read`` timeout re-arms a timer for every chunk received, which costs
    more than the rest of the loop's work on a fast download; here a chunk only records the
    time, and a watcher task looks every quarter of the limit. Silence makes the guarded block
    raise :class:`TimeoutError`.
    """

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self._loop = asyncio.get_running_loop()
        self._last = self._loop.time()

    def heard(self) -> None:
        """Data arrived."""
        self._last = self._loop.time()

    @asynccontextmanager
    async def guard(self) -> AsyncIterator[None]:
        """Watch the block inside; :class:`TimeoutError` when it goes silent."""
        async with asyncio.timeout(None) as deadline:
            watcher = asyncio.create_task(self._watch(deadline))
            try:
                yield
            finally:
                watcher.cancel()

    async def _watch(self, deadline: asyncio.Timeout) -> None:
        while True:
            await asyncio.sleep(self.limit / 4)
            if self._loop.time() - self._last >= self.limit:
                deadline.reschedule(self._loop.time())  # expires now, in the guarded block
                return


async def _chunks(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """The body's chunks as they were received. (``iter_any`` joins what is buffered into one
    new bytes object, a copy of most of a fast download that the loop pays for.)"""
    while True:
        chunk, end_of_http_chunk = await content.readchunk()
        if chunk:
            yield chunk
        elif not end_of_http_chunk:
            return  # the end of the body


def _local_path(url: str) -> Path:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise FetchFailed(f"a file URL must name this machine, not {parts.netloc!r}")
    return Path(url2pathname(parts.path))


def _open_regular(path: Path) -> BinaryIO:
    # O_NONBLOCK: opening a FIFO must not hang; it is refused just below anyway.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise FetchFailed(f"{path} is not a regular file")
    return open(fd, "rb", buffering=0)


def _cut(part: PartFile, piece: Piece, error: Exception) -> str:
    cause = error.__cause__ or error
    return f"the connection broke after {part.size} of {piece.size} bytes ({_describe(cause)})"


def _describe(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
