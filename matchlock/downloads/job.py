"""The download jobs: every piece of a match-lock config, or only its mandatory pieces.

:func:`download` installs the pieces into ``dest`` (the content-addressed cache, see
:mod:`matchlock.downloads.cache`), at most ``jobs`` at a time over one shared HTTP connection
pool, and returns ``{"collection/piece": folder}``. A folder is either in the cache or, when the
game already has the piece (``engine_root``), in the game's own files.

The job's events go to ``on_event`` as they happen and, with ``log_path``, to a new event log
(stream ``download``) that ``matchlock replay`` reads:
:class:`~matchlock.core.events.DownloadOpened` with every requested piece's size, each piece's
events (:mod:`matchlock.downloads.piece`), and :class:`~matchlock.core.events.DownloadClosed`,
which is written even when the job is cancelled. Events are handed to the log without IO on the hot
path and written in batches by a background task; the log fsyncs at decisions (a piece finished or
failed).

Each resolvable is fetched by the resolver registered for its scheme
(:data:`matchlock.downloads.resolvers.RESOLVERS`), opened once for the job (the http one holds
the job's connection pool). The job remembers the hosts its resolvers found down (refusing
connections, not resolving, not answering a connect in time: :mod:`matchlock.downloads.hosts`),
so every other piece skips them at once.

A job may be given more resolvers (``resolvers=``, scheme -> factory, see
:meth:`~matchlock.downloads.resolvers.Registry.with_extra`; a resolver that outlives the job is
passed as :func:`~matchlock.downloads.resolvers.already_open`): a room member passes the room's
(:mod:`matchlock.downloads.resolvers.room`) as ``room``. Then every piece has one more source,
``room:``, at ``room_source``: after its resolvables (``"last"``, the default), before them
(``"first"``), or not at all (``"never"``); a piece that lists no resolvable has only the room.

When some piece cannot be installed, every other piece is still attempted, then
:class:`~matchlock.downloads.errors.DownloadError` is raised carrying each failed piece's reasons
and the folders that did install.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from matchlock.core.config import SCHEMES, MatchLockConfig, Piece
from matchlock.core.errors import UsageError
from matchlock.core.events import DownloadClosed, DownloadOpened, Event
from matchlock.downloads.cache import Cache
from matchlock.downloads.engine import engine_folders
from matchlock.downloads.errors import DownloadError
from matchlock.downloads.fetch import Fetcher
from matchlock.downloads.hosts import Hosts
from matchlock.downloads.piece import (
    ROOM_SOURCE,
    FolderRejected,
    PieceInstaller,
    PieceOutcome,
    RoomSource,
)
from matchlock.downloads.resolvers import (
    RESOLVERS,
    FetchPolicy,
    Registry,
    ResolverContext,
    ResolverFactory,
)
from matchlock.downloads.unpack import UnpackLimits
from matchlock.store.eventlog import EventLog

__all__ = ["DEFAULT_SCHEMES", "RoomSource", "download", "download_sync"]

DEFAULT_SCHEMES: tuple[str, ...] = SCHEMES
"""The resolvable schemes a download job accepts unless told otherwise: every scheme a
match-lock config may name (:data:`matchlock.core.config.SCHEMES`)."""

EventSink = Callable[[Event], None]


async def download(
    config: MatchLockConfig,
    dest: str | os.PathLike[str],
    *,
    mandatory_only: bool = False,
    jobs: int = 8,
    engine_root: str | os.PathLike[str] | None = None,
    allowed_schemes: Collection[str] = DEFAULT_SCHEMES,
    on_event: EventSink | None = None,
    on_notice: Callable[[FolderRejected], None] | None = None,
    log_path: str | os.PathLike[str] | None = None,
    clock: Callable[[], float] = time.time,
    policy: FetchPolicy | None = None,
    limits: UnpackLimits | None = None,
    resolvers: Mapping[str, ResolverFactory] | None = None,
    room_source: RoomSource = "last",
) -> dict[str, Path]:
    """Install every piece of ``config`` (only mandatory collections' with ``mandatory_only``)
    into the cache at ``dest``; return ``{"collection/piece": folder}`` in config order.

    ``jobs`` pieces are worked on at a time. ``engine_root`` is the game's folder, searched
    through each collection's ``engine_path``. Resolvables whose scheme is not in
    ``allowed_schemes`` are skipped with that reason. ``on_event`` receives every event,
    ``on_notice`` every existing folder that was refused (:class:`FolderRejected`);
    ``log_path`` (which must not exist yet) receives the event log. ``clock`` stamps events.
    ``resolvers`` adds resolver factories by scheme for this job (their schemes are allowed);
    with one for ``room``, each piece's ``room:`` source sits at ``room_source`` (see the module
    docs).

    Raises :class:`~matchlock.downloads.errors.DownloadError` when some piece failed (after all
    were attempted), :class:`~matchlock.core.errors.UsageError` for ``jobs < 1`` or an existing log.
    """
    if jobs < 1:
        raise UsageError(f"jobs must be at least 1, not {jobs}")
    pieces = config.pieces(mandatory_only=mandatory_only)
    cache = Cache(Path(dest))
    cache.prepare()
    listed = await asyncio.to_thread(_listed, cache)
    extra = dict(resolvers or {})
    job = _Job(
        cache=cache,
        engine=engine_folders(config, None if engine_root is None else Path(engine_root)),
        jobs=jobs,
        schemes=(*allowed_schemes, *(s for s in extra if s not in allowed_schemes)),
        policy=policy or FetchPolicy(),
        limits=limits or UnpackLimits(),
        clock=clock,
        on_notice=on_notice,
        resolvers=RESOLVERS.with_extra(extra) if extra else RESOLVERS,
        room_source=room_source if ROOM_SOURCE in extra else "never",
        listed=listed,
    )
    async with _event_stream(on_event, log_path) as emit:
        emit(DownloadOpened(at=clock(), sizes={key: p.content_size for key, p in pieces.items()}))
        try:
            outcomes = await job.run(pieces, emit)
        finally:
            emit(DownloadClosed(at=clock()))
    return _folders_or_raise(outcomes)


def download_sync(
    config: MatchLockConfig,
    dest: str | os.PathLike[str],
    *,
    mandatory_only: bool = False,
    jobs: int = 8,
    engine_root: str | os.PathLike[str] | None = None,
    allowed_schemes: Collection[str] = DEFAULT_SCHEMES,
    on_event: EventSink | None = None,
    on_notice: Callable[[FolderRejected], None] | None = None,
    log_path: str | os.PathLike[str] | None = None,
    clock: Callable[[], float] = time.time,
    policy: FetchPolicy | None = None,
    limits: UnpackLimits | None = None,
    resolvers: Mapping[str, ResolverFactory] | None = None,
    room_source: RoomSource = "last",
) -> dict[str, Path]:
    """:func:`download` for code without an event loop: runs it to the end and returns the
    same result (or raises the same errors). Calling it from a running loop is a
    :class:`~matchlock.core.errors.UsageError`: ``await download(...)`` there instead."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise UsageError("download_sync() cannot run inside an event loop; await download()")
    return asyncio.run(
        download(
            config,
            dest,
            mandatory_only=mandatory_only,
            jobs=jobs,
            engine_root=engine_root,
            allowed_schemes=allowed_schemes,
            on_event=on_event,
            on_notice=on_notice,
            log_path=log_path,
            clock=clock,
            policy=policy,
            limits=limits,
            resolvers=resolvers,
            room_source=room_source,
        )
    )


@dataclass(frozen=True)
class _Job:
    cache: Cache
    engine: Mapping[str, Path]
    jobs: int
    schemes: tuple[str, ...]
    policy: FetchPolicy
    limits: UnpackLimits
    clock: Callable[[], float]
    on_notice: Callable[[FolderRejected], None] | None
    resolvers: Registry = RESOLVERS
    room_source: RoomSource = "never"
    listed: frozenset[str] | None = None

    async def run(self, pieces: Mapping[str, Piece], emit: EventSink) -> dict[str, PieceOutcome]:
        """Install ``pieces``, ``jobs`` at a time; every piece's outcome by key."""
        # Hashing and writing run here, a piece's two at once; more threads than cores (plus a
        # little IO slack) would only queue on the CPU.
        workers = max(2, min(2 * self.jobs, (os.cpu_count() or 2) + 2))
        executor = ThreadPoolExecutor(workers, thread_name_prefix="matchlock-download")
        hosts = Hosts(self.clock)
        context = ResolverContext(self.policy, hosts, frozenset(self.schemes), self.jobs)
        try:
            async with AsyncExitStack() as stack:
                opened = await self.resolvers.open(self.schemes, context, stack)
                installer = PieceInstaller(
                    cache=self.cache,
                    fetcher=Fetcher(opened, self.policy, self.schemes, hosts),
                    executor=executor,
                    limits=self.limits,
                    emit=emit,
                    clock=self.clock,
                    on_notice=self.on_notice,
                    room_source=self.room_source,
                    keep_archives=ROOM_SOURCE in self.resolvers,
                    listed=self.listed,
                )
                return await self._install_all(installer, pieces)
        finally:
            executor.shutdown(wait=False, cancel_futures=True)

    async def _install_all(
        self, installer: PieceInstaller, pieces: Mapping[str, Piece]
    ) -> dict[str, PieceOutcome]:
        slots = asyncio.Semaphore(self.jobs)

        async def one(key: str, piece: Piece) -> PieceOutcome:
            async with slots:
                return await installer.install(key, piece, self.engine.get(key))

        try:
            async with asyncio.TaskGroup() as group:
                tasks = {key: group.create_task(one(key, piece)) for key, piece in pieces.items()}
        except ExceptionGroup as group:  # an install raised (the local disk): that error, bare
            raise group.exceptions[0] from None
        return {key: task.result() for key, task in tasks.items()}


@asynccontextmanager
async def _event_stream(
    on_event: EventSink | None, log_path: str | os.PathLike[str] | None
) -> AsyncIterator[EventSink]:
    """An ``emit(event)`` that calls ``on_event`` and feeds the log, flushed in the background."""
    log = None if log_path is None else await EventLog.create(Path(log_path), stream="download")
    wake = asyncio.Event()
    closing = False

    def emit(event: Event) -> None:
        if on_event is not None:
            on_event(event)
        if log is not None:
            log.buffer(event)
            wake.set()

    async def flush_until_closed(log: EventLog) -> None:
        while not closing:
            await wake.wait()
            wake.clear()
            await log.flush()

    flusher = None if log is None else asyncio.create_task(flush_until_closed(log))
    try:
        yield emit
    finally:
        if log is not None and flusher is not None:
            closing = True
            wake.set()
            try:
                await flusher  # its last round writes what is left
            finally:
                await log.close()


def _listed(cache: Cache) -> frozenset[str]:
    """Clear dead installers' leftovers, then list the cache's folders (once per job: a piece
    whose folder is not listed skips the look for it without the lock)."""
    cache.sweep_leftovers()
    return frozenset(os.listdir(cache.root))


def _folders_or_raise(outcomes: Mapping[str, PieceOutcome]) -> dict[str, Path]:
    folders = {key: o.folder for key, o in outcomes.items() if o.folder is not None}
    failures = {key: o.failures for key, o in outcomes.items() if o.folder is None}
    if failures:
        raise DownloadError(failures, folders)
    return folders
