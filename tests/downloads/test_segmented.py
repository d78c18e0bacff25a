"""A large piece over several connections: real range requests to a real loopback server.

The server honours ``Range: bytes=A-B`` (or ignores it, cuts one segment, or corrupts one byte,
depending on the route) and logs every request with the client port it came from, so the tests
see how many connections were used and which bytes each asked for. The policy makes a 1 MiB
piece large enough to be segmented (64 KiB segments, four connections).
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from matchlock.core.events import Event, ResolvableFailed
from matchlock.downloads import STATE_FOLDER, DownloadError, FetchPolicy, download
from matchlock.downloads.sink import IN_HAND
from matchlock.tools.demo.mirror import Mirror, Route
from tests.downloads.conftest import config, piece, sha256

SEGMENT = 64 * 1024
POLICY = FetchPolicy(
    attempts=1, backoff=0.0, read_timeout=2.0, connections=4, segment_min=0, segment_bytes=SEGMENT
)
DATA_SIZE = 16 * SEGMENT + 1234  # a probe, 16 more segments, the last one short
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Asked:
    """One request the server received."""

    route: str
    first: int | None  # None: no Range header
    last: int | None
    port: int  # the client's port: one per connection


class RangeServer(Mirror):
    """Blobs served with bounded ranges; see the module docs for the routes."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[Asked] = []
        self.cut_at = 5 * SEGMENT  # the segment /cut/ cuts, once
        self.wrong_at = 9 * SEGMENT + 77  # the byte /wrongbyte/ flips, in every answer
        self.step_pause = 0.0  # /ranges/ pauses this long every 8 KiB (for the kill test)
        self.held_at = SEGMENT  # the segment /held/ keeps waiting
        self.stall_after = sys.maxsize  # /ranges/ answers later requests once release is set
        self.release = asyncio.Event()
        self._cut_done = False

    def routes(self) -> dict[str, Route]:
        """ranges, norange, cut, wrongbyte, spoiled (the first byte of every answer flipped),
        missing (404), chunked (ranges, with no Content-Length), held (ranges, the one from
        :attr:`held_at` answered only once :attr:`release` is set)."""
        return {
            "ranges": self._ranges,
            "norange": self._norange,
            "cut": self._cut,
            "wrongbyte": self._wrongbyte,
            "spoiled": self._spoiled,
            "missing": self._missing,
            "chunked": self._chunked,
            "held": self._held,
        }

    def _log(self, route: str, request: web.Request, data: bytes) -> tuple[int, int] | None:
        span = parse_range(request.headers.get("Range"), len(data))
        peer = request.transport.get_extra_info("peername") if request.transport else None
        first, last = span if span else (None, None)
        self.log.append(Asked(route, first, last, peer[1] if peer else 0))
        return span

    async def _send(
        self,
        request: web.Request,
        data: bytes,
        span: tuple[int, int] | None,
        *,
        chunked: bool = False,
    ) -> web.StreamResponse:
        first, last = span if span else (0, len(data) - 1)
        response = web.StreamResponse(status=206 if span else 200)
        if not chunked:
            response.content_length = last - first + 1
        if span:
            response.headers["Content-Range"] = f"bytes {first}-{last}/{len(data)}"
        await response.prepare(request)
        body = data[first : last + 1]
        step = 8 * 1024 if self.step_pause else len(body) or 1
        for offset in range(0, len(body), step):
            await response.write(body[offset : offset + step])
            if self.step_pause:
                await asyncio.sleep(self.step_pause)
        await response.write_eof()
        return response

    async def _ranges(self, request: web.Request, data: bytes) -> web.StreamResponse:
        span = self._log("ranges", request, data)
        if len(self.log) > self.stall_after:
            await self.release.wait()
        return await self._send(request, data, span)

    async def _norange(self, request: web.Request, data: bytes) -> web.StreamResponse:
        self._log("norange", request, data)
        return await self._send(request, data, None)

    async def _cut(self, request: web.Request, data: bytes) -> web.StreamResponse:
        span = self._log("cut", request, data)
        if span is None or span[0] != self.cut_at or self._cut_done:
            return await self._send(request, data, span)
        self._cut_done = True
        first, last = span
        response = web.StreamResponse(status=206)
        response.content_length = last - first + 1
        response.headers["Content-Range"] = f"bytes {first}-{last}/{len(data)}"
        await response.prepare(request)
        await response.write(data[first : first + (last - first) // 2])
        assert request.transport is not None
        request.transport.abort()  # a reset in the middle of the segment
        return response

    async def _spoiled(self, request: web.Request, data: bytes) -> web.StreamResponse:
        span = self._log("spoiled", request, data)
        first = span[0] if span else 0
        spoiled = bytearray(data)
        spoiled[first] ^= 0xFF
        return await self._send(request, bytes(spoiled), span)

    async def _chunked(self, request: web.Request, data: bytes) -> web.StreamResponse:
        span = self._log("chunked", request, data)
        return await self._send(request, data, span, chunked=True)

    async def _held(self, request: web.Request, data: bytes) -> web.StreamResponse:
        span = self._log("held", request, data)
        if span is not None and span[0] == self.held_at:
            await self.release.wait()
        return await self._send(request, data, span)

    async def _missing(self, request: web.Request, data: bytes) -> web.StreamResponse:
        self._log("missing", request, data)
        return web.Response(status=404)

    async def _wrongbyte(self, request: web.Request, data: bytes) -> web.StreamResponse:
        span = self._log("wrongbyte", request, data)
        spoiled = bytearray(data)
        spoiled[self.wrong_at] ^= 0xFF
        return await self._send(request, bytes(spoiled), span)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``bytes=A-B`` or ``bytes=A-`` as (first, last), or None."""
    if not header or not header.startswith("bytes="):
        return None
    first, _, last = header.removeprefix("bytes=").partition("-")
    return int(first), min(int(last), size - 1) if last else size - 1


@pytest.fixture
async def ranges() -> AsyncIterator[RangeServer]:
    """A started :class:`RangeServer`, stopped after the test."""
    server = RangeServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def one_piece(data: bytes, *urls: str) -> dict[str, dict[str, Any]]:
    return {"big": {"pieces": {"blob": piece(data, *urls, filename="blob.bin")}}}


async def fetch(tmp: Path, data: bytes, url: str, events: list[Event] | None = None) -> Path:
    folders = await download(
        config(one_piece(data, url)),
        tmp / "cache",
        policy=POLICY,
        on_event=None if events is None else events.append,
    )
    return folders["big/blob"] / "blob.bin"


def covered(asked: list[Asked]) -> list[tuple[int, int]]:
    return sorted((a.first, a.last) for a in asked if a.first is not None and a.last is not None)


def asked_bytes(spans: list[tuple[int, int]]) -> int:
    """How many bytes the inclusive ranges ``spans`` ask for in all."""
    return sum(last - first + 1 for first, last in spans)


def held_by(*servers: RangeServer) -> bytes:
    """Fresh random content of ``DATA_SIZE`` bytes, served as ``a`` by each of ``servers``."""
    data = os.urandom(DATA_SIZE)
    for server in servers:
        server.add("a", data)
    return data


async def test_a_large_piece_arrives_over_several_connections_in_ranges(
    ranges: RangeServer, tmp_path: Path
) -> None:
    data = held_by(ranges)
    path = await fetch(tmp_path, data, ranges.url("ranges", "a"))
    assert path.read_bytes() == data
    spans = covered(ranges.log)
    assert spans[0] == (0, SEGMENT - 1)  # the first request asks for the first segment only
    assert len(spans) == 17 and all(b - a + 1 <= SEGMENT for a, b in spans)
    assert [a for a, _ in spans] == [b + 1 for _, b in [(-1, -1), *spans[:-1]]]  # no gap
    assert spans[-1][1] == len(data) - 1
    assert len({a.port for a in ranges.log}) >= 3  # the probe's and more than one other


async def test_ranges_sent_chunked_without_a_length_are_segments_too(
    ranges: RangeServer, tmp_path: Path
) -> None:
    data = held_by(ranges)
    path = await fetch(tmp_path, data, ranges.url("chunked", "a"))
    assert path.read_bytes() == data
    spans = covered(ranges.log)
    assert len(spans) == 17 and asked_bytes(spans) == len(data)


async def test_segments_wait_for_a_slow_one_in_a_bounded_pool(
    ranges: RangeServer, tmp_path: Path
) -> None:
    data = held_by(ranges)
    task = asyncio.create_task(fetch(tmp_path, data, ranges.url("held", "a")))
    pool = POLICY.connections + IN_HAND + 1
    while len(ranges.log) < 1 + pool:  # the first segment's request, then the pool's
        assert not task.done(), "the download ended while a segment was held"
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)  # room for requests beyond the pool, if the pool let them through
    asked_while_held = len(ranges.log) - 1
    ranges.release.set()
    assert (await task).read_bytes() == data
    assert asked_while_held == pool  # memory: the held segment and those waiting behind it
    assert len(ranges.log) == 17


async def test_a_server_that_ignores_ranges_sends_the_piece_once_whole(
    ranges: RangeServer, tmp_path: Path
) -> None:
    data = held_by(ranges)
    path = await fetch(tmp_path, data, ranges.url("norange", "a"))
    assert path.read_bytes() == data
    (asked,) = ranges.log  # no segment requested after the 200
    assert (asked.first, asked.last) == (0, SEGMENT - 1)


async def test_a_cut_segment_is_fetched_again_by_another_connection(
    ranges: RangeServer, tmp_path: Path
) -> None:
    data = held_by(ranges)
    events: list[Event] = []
    path = await fetch(tmp_path, data, ranges.url("cut", "a"), events)
    assert path.read_bytes() == data
    cut = [a for a in ranges.log if a.first == ranges.cut_at]
    assert len(cut) == 2 and cut[0].port != cut[1].port  # cut once, then on another connection
    assert not [e for e in events if isinstance(e, ResolvableFailed)]


async def test_a_wrong_byte_in_a_segment_is_caught_by_the_final_sha256(
    ranges: RangeServer, tmp_path: Path
) -> None:
    data = held_by(ranges)
    with pytest.raises(DownloadError) as raised:
        await fetch(tmp_path, data, ranges.url("wrongbyte", "a"))
    (failure,) = raised.value.failures["big/blob"]
    assert f"expected {sha256(data)}" in failure.reason
    spans = covered(ranges.log)
    assert any(a <= ranges.wrong_at <= b for a, b in spans[1:])  # in a segment, not the probe
    assert not list((tmp_path / "cache").glob(f"{sha256(data)}*"))


async def test_cancelled_mid_piece_its_threads_end_and_the_part_is_a_prefix(
    ranges: RangeServer, tmp_path: Path
) -> None:
    data = held_by(ranges)
    ranges.stall_after = 1 + POLICY.connections  # the probe and one segment each, in any order
    part = part_path(tmp_path, data)
    task = asyncio.create_task(fetch(tmp_path, data, ranges.url("ranges", "a")))
    async with asyncio.timeout(30):
        while not (part.exists() and part.stat().st_size >= 2 * SEGMENT):
            assert not task.done(), "the download ended before it could be cancelled"
            await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not [t for t in threading.enumerate() if t.name.startswith("matchlock-range-")]
    assert len(ranges.log) <= ranges.stall_after + POLICY.connections  # stopped at held ones
    ranges.release.set()  # the answers held meanwhile go to connections that are gone
    assert len(data) > part.stat().st_size >= 2 * SEGMENT
    assert part.read_bytes() == data[: part.stat().st_size]


def part_path(tmp_path: Path, data: bytes) -> Path:
    return tmp_path / "cache" / STATE_FOLDER / "tmp" / f"{sha256(data)}.part"


KILLED = """
import asyncio, sys
from pathlib import Path
from typing import Any
sys.path.insert(0, sys.argv[1])
from tests.downloads.test_segmented import POLICY, one_piece
from tests.downloads.conftest import config
from matchlock.downloads import download
data = Path(sys.argv[2]).read_bytes()
asyncio.run(download(config(one_piece(data, sys.argv[3])), sys.argv[4], policy=POLICY))
"""


async def test_a_killed_segmented_download_resumes_after_its_contiguous_prefix(
    ranges: RangeServer, tmp_path: Path
) -> None:
    data = held_by(ranges)
    (tmp_path / "data").write_bytes(data)
    ranges.step_pause = 0.02
    url = ranges.url("ranges", "a")
    cache = tmp_path / "cache"
    args = (str(REPO), str(tmp_path / "data"), url, str(cache))
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", KILLED, *args)
    part = part_path(tmp_path, data)
    deadline = asyncio.get_running_loop().time() + 20
    while not (part.exists() and part.stat().st_size >= 3 * SEGMENT):
        assert asyncio.get_running_loop().time() < deadline, "the download never got going"
        await asyncio.sleep(0.01)
    process.kill()
    await process.wait()
    kept = part.stat().st_size
    assert kept < len(data)
    assert part.read_bytes() == data[:kept]  # only ever a contiguous prefix: nothing to mend
    assert len({a.port for a in ranges.log}) >= 3  # it was segmented when killed

    ranges.log.clear()
    ranges.step_pause = 0.0
    path = await fetch(tmp_path, data, url)
    assert path.read_bytes() == data
    spans = covered(ranges.log)
    assert spans[0][0] == kept  # the resume asks for nothing before the prefix's end
    assert asked_bytes(spans) == len(data) - kept


@pytest.fixture
async def other() -> AsyncIterator[RangeServer]:
    """A second :class:`RangeServer`: the piece's mirror."""
    server = RangeServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def fetch_from(tmp: Path, data: bytes, *urls: str, events: list[Event]) -> Path:
    folders = await download(
        config(one_piece(data, *urls)), tmp / "cache", policy=POLICY, on_event=events.append
    )
    return folders["big/blob"] / "blob.bin"


async def test_segments_come_from_the_mirrors_at_once(
    ranges: RangeServer, other: RangeServer, tmp_path: Path
) -> None:
    data = held_by(ranges, other)
    events: list[Event] = []
    path = await fetch_from(
        tmp_path, data, ranges.url("ranges", "a"), other.url("ranges", "a"), events=events
    )
    assert path.read_bytes() == data
    assert ranges.log and other.log  # both served segments of the one attempt
    assert covered(ranges.log)[0] == (0, SEGMENT - 1)  # the first resolvable got the probe
    spans = sorted(covered(ranges.log) + covered(other.log))
    assert asked_bytes(spans) == len(data)  # each byte asked for once
    assert not [e for e in events if isinstance(e, ResolvableFailed)]


async def test_a_mirror_with_a_wrong_byte_is_not_blamed_on_the_resolvable(
    ranges: RangeServer, other: RangeServer, tmp_path: Path
) -> None:
    data = held_by(ranges, other)
    events: list[Event] = []
    good = ranges.url("ranges", "a")
    path = await fetch_from(tmp_path, data, good, other.url("spoiled", "a"), events=events)
    assert path.read_bytes() == data
    assert other.log  # the mirror did send segments
    spans = covered(ranges.log)
    assert asked_bytes(spans) > len(data)  # then the whole piece from the first
    assert not [e for e in events if isinstance(e, ResolvableFailed)]


async def test_a_mirror_that_does_not_answer_ranges_leaves_the_segments_to_the_others(
    ranges: RangeServer, other: RangeServer, tmp_path: Path
) -> None:
    data = held_by(ranges, other)
    events: list[Event] = []
    path = await fetch_from(
        tmp_path, data, ranges.url("ranges", "a"), other.url("missing", "a"), events=events
    )
    assert path.read_bytes() == data
    assert other.log  # asked, answered 404, and left
    assert asked_bytes(covered(ranges.log)) == len(data)
    assert not [e for e in events if isinstance(e, ResolvableFailed)]


async def test_a_mirror_far_slower_than_the_others_is_let_go_of_its_segment(
    ranges: RangeServer, other: RangeServer, tmp_path: Path
) -> None:
    data = held_by(ranges, other)
    other.step_pause = 0.5  # 8 KiB every half second: a 64 KiB segment takes 4 s
    events: list[Event] = []
    path = await fetch_from(
        tmp_path, data, ranges.url("ranges", "a"), other.url("ranges", "a"), events=events
    )
    assert path.read_bytes() == data
    slow = set(covered(other.log))
    assert slow & set(covered(ranges.log))  # what the slow mirror held was asked again here
    assert not [e for e in events if isinstance(e, ResolvableFailed)]
