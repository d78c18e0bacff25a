"""The resolver contract: what every :class:`~matchlock.downloads.resolvers.Resolver` must do.

:class:`ResolverContract` holds the tests; ``test_contract.py`` subclasses it once per resolver
(http, file), each saying only which scheme it serves and, through its ``source`` fixture, how
to offer bytes at a URL of that scheme, what a missing source's URL is, and which URLs make it
fail in which way. The resolver runs as a download job runs it: opened from
:data:`~matchlock.downloads.resolvers.RESOLVERS`, called by the job's
:class:`~matchlock.downloads.fetch.Fetcher` into a real ``.part`` file held under the content's
lock in a real cache. A new resolver proves itself by passing this suite: a good piece arrives
and verifies; a wrong digest is Corrupt and leaves nothing; a source larger than the pin is cut
at the pinned size; progress is reported and never goes backwards; a cancellation mid-transfer
leaves nothing outside the cache's temporary folder and the next attempt still succeeds; a
missing source is NotFound; every failure the resolver knows has its type.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Protocol

import pytest

from matchlock.downloads.cache import STATE_FOLDER, Cache
from matchlock.downloads.fetch import Fetcher
from matchlock.downloads.hosts import Hosts
from matchlock.downloads.resolvers import (
    RESOLVERS,
    Corrupt,
    FetchPolicy,
    HostUnreachable,
    NotFound,
    Refused,
    ResolveFailed,
    Resolver,
    ResolverContext,
    TooLarge,
    Wanted,
)
from matchlock.downloads.sink import BATCH_BYTES, PartFile

POLICY = FetchPolicy(attempts=1, backoff=0.0, connect_timeout=2.0, read_timeout=0.5)
"""One attempt, and a stall noticed within half a second."""

BIG = 3 * BATCH_BYTES + 12_345
"""Several batches: progress is reported more than once, and a cancel lands mid-transfer."""


class Source(Protocol):
    """Where the resolver under test finds bytes (a server, a folder), made by the subclass."""

    def serve(self, name: str, data: bytes) -> str:
        """A URL whose source holds exactly ``data``."""

    def missing(self, name: str) -> str:
        """A URL whose source says it holds nothing."""

    def failures(self, name: str, data: bytes) -> list[tuple[str, type[ResolveFailed]]]:
        """URLs, each with the failure the resolver must raise when asked there for ``data``
        (one per failure class the resolver can tell apart)."""


class Outcome:
    """What one fetch left: the bytes in the part when it ended, and every progress call."""

    def __init__(self) -> None:
        self.progress: list[int] = []
        self.held = b""
        self.failure: ResolveFailed | None = None


class Job:
    """A download job's setting for one resolver: a real cache, worker threads, the hosts
    memory, and the job's fetcher over every registered resolver."""

    def __init__(
        self,
        cache: Cache,
        executor: ThreadPoolExecutor,
        resolvers: Mapping[str, Resolver],
        hosts: Hosts,
        allowed: Collection[str],
    ) -> None:
        self.cache = cache
        self.executor = executor
        self.resolvers = resolvers
        self.hosts = hosts
        self.fetcher = Fetcher(resolvers, POLICY, allowed, hosts)

    async def fetch(
        self, url: str, data: bytes, *, on_progress: Callable[[int], None] | None = None
    ) -> Outcome:
        """Ask for ``data``'s piece at ``url``, holding its content's lock as the job does."""
        outcome = Outcome()

        def progress(done: int) -> None:
            outcome.progress.append(done)
            if on_progress is not None:
                on_progress(done)

        wanted = Wanted("chars/kfm", hashlib.sha256(data).hexdigest(), len(data))
        async with self.cache.locked(wanted.sha256, self.executor) as held:
            part = PartFile(held)
            try:
                await self.fetcher.fetch(url, wanted, part, progress, resume=True)
            except ResolveFailed as failure:
                outcome.failure = failure
            await part.drain()
            outcome.held = held.path.read_bytes()
        return outcome

    def stray_files(self) -> list[Path]:
        """Every file in the cache outside its temporary folder (``.matchlock/tmp``)."""
        tmp = self.cache.root / STATE_FOLDER / "tmp"
        return [
            path
            for path in self.cache.root.rglob("*")
            if not path.is_dir() and not path.is_relative_to(tmp)
        ]


@asynccontextmanager
async def job(tmp_path: Path, allowed: Collection[str]) -> AsyncIterator[Job]:
    """A :class:`Job` whose fetcher allows ``allowed``, every registered resolver opened."""
    cache = Cache(tmp_path / "cache")
    cache.prepare()
    executor = ThreadPoolExecutor(2)
    hosts = Hosts(clock=lambda: 0.0)
    context = ResolverContext(POLICY, hosts, frozenset(allowed), jobs=2)
    try:
        async with AsyncExitStack() as stack:
            opened = await RESOLVERS.open(allowed, context, stack)
            yield Job(cache, executor, opened, hosts, allowed)
    finally:
        executor.shutdown(wait=True)


class ResolverContract:
    """The tests every resolver passes; subclasses set :attr:`scheme` and override the
    ``source`` fixture with a :class:`Source` of that scheme."""

    scheme = ""
    """The URL scheme the resolver under test is registered for."""

    @pytest.fixture
    def source(self) -> Source:
        """The subclass's :class:`Source`."""
        raise NotImplementedError

    @pytest.fixture
    async def run(self, tmp_path: Path) -> AsyncIterator[Job]:
        """A job allowing every registered scheme."""
        async with job(tmp_path, tuple(RESOLVERS)) as running:
            yield running

    def test_the_scheme_has_a_resolver(self) -> None:
        assert self.scheme in RESOLVERS

    async def test_a_good_piece_arrives_verified(self, run: Job, source: Source) -> None:
        data = os.urandom(BIG)
        got = await run.fetch(source.serve("good", data), data)
        assert got.failure is None
        assert got.held == data
        assert run.stray_files() == []  # the resolver only ever writes the part

    async def test_a_wrong_digest_is_corrupt_and_leaves_nothing(
        self, run: Job, source: Source
    ) -> None:
        data = os.urandom(200_000)
        other = bytes(b ^ 0x5A for b in data)
        got = await run.fetch(source.serve("wrong", other), data)
        assert isinstance(got.failure, Corrupt), got.failure
        assert hashlib.sha256(data).hexdigest() in got.failure.reason  # what was expected
        assert got.held == b""
        assert run.stray_files() == []
        assert list((run.cache.root / STATE_FOLDER / "tmp").iterdir()) == []

    async def test_a_source_larger_than_the_pin_is_cut_at_the_pinned_size(
        self, run: Job, source: Source
    ) -> None:
        data = os.urandom(BIG)
        got = await run.fetch(source.serve("large", data + b"x" * BATCH_BYTES), data)
        assert isinstance(got.failure, TooLarge), got.failure
        assert str(len(data)) in got.failure.reason
        assert len(got.held) <= len(data) and data.startswith(got.held)
        assert run.stray_files() == []

    async def test_progress_is_reported_and_never_goes_backwards(
        self, run: Job, source: Source
    ) -> None:
        data = os.urandom(BIG)
        got = await run.fetch(source.serve("progress", data), data)
        assert got.failure is None
        assert len(got.progress) >= 2
        assert got.progress == sorted(got.progress)
        assert got.progress[-1] == len(data)

    async def test_cancelled_mid_transfer_it_leaves_nothing_outside_the_temporary_folder(
        self, run: Job, source: Source
    ) -> None:
        data = os.urandom(BIG)
        url = source.serve("cancelled", data)
        task: asyncio.Task[Outcome] | None = None
        seen: list[int] = []

        def cancel_once_some_arrived(done: int) -> None:
            seen.append(done)
            if done > 0 and task is not None:
                task.cancel()

        task = asyncio.create_task(run.fetch(url, data, on_progress=cancel_once_some_arrived))
        with pytest.raises(asyncio.CancelledError):
            await task
        assert 0 < max(seen) < len(data), "cancelled mid-transfer"
        assert run.stray_files() == []
        again = await run.fetch(url, data)  # the lock was released, the part is usable
        assert again.failure is None and again.held == data

    async def test_a_missing_source_is_not_found(self, run: Job, source: Source) -> None:
        data = os.urandom(1000)
        got = await run.fetch(source.missing("missing"), data)
        assert isinstance(got.failure, NotFound), got.failure
        assert got.held == b""

    async def test_each_failure_kind_has_its_type(self, tmp_path: Path, source: Source) -> None:
        data = os.urandom(300_000)
        cases = source.failures("failing", data)
        assert cases, "a resolver names at least one failure of its own"
        for number, (url, expected) in enumerate(cases):
            # A cache each: a part one case left must not serve the next.
            async with job(tmp_path / f"case{number}", tuple(RESOLVERS)) as run:
                got = await run.fetch(url, data)
                assert type(got.failure) is expected, (url, got.failure)
                assert got.failure.reason
                assert len(got.held) <= len(data)
                assert run.stray_files() == []

    async def test_a_scheme_not_allowed_is_refused_without_the_resolver(
        self, tmp_path: Path, source: Source
    ) -> None:
        data = os.urandom(1000)
        others = [scheme for scheme in RESOLVERS if scheme != self.scheme]
        async with job(tmp_path, others) as limited:
            got = await limited.fetch(source.serve("disallowed", data), data)
        assert isinstance(got.failure, Refused), got.failure
        assert f"scheme {self.scheme!r} is not allowed" in got.failure.reason

    async def test_a_host_found_down_is_skipped_without_a_request(
        self, run: Job, source: Source
    ) -> None:
        data = os.urandom(1000)
        url = source.serve("skipped", data)
        host = run.resolvers[self.scheme].host(url)
        if host is None:
            pytest.skip(f"{self.scheme} URLs name no host")
        run.hosts.mark_down(host, "chars/other", "found down by the test")
        got = await run.fetch(url, data)
        assert isinstance(got.failure, HostUnreachable), got.failure
        assert "not requested" in got.failure.reason and "chars/other" in got.failure.reason
