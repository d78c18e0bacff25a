"""One piece, from "do we have it already?" to a verified, installed folder, told as events.

For each piece, :meth:`PieceInstaller.install` emits, in this order:

- :class:`~matchlock.core.events.PieceStarted`;
- when the game's folder or the cache already holds the piece (verified, see
  :mod:`matchlock.downloads.verify`): :class:`~matchlock.core.events.PieceFinished` with ``source``
  ``engine`` or ``cache``, and nothing else;
- otherwise, for each resolvable in turn (see :class:`~matchlock.downloads.turns.Turns`: in
  order, then those that failed transiently once more after the others):
  :class:`~matchlock.core.events.PieceProgress` now and then, then either
  :class:`~matchlock.core.events.ResolvableFailed` (and on to the next resolvable, whose
  progress starts again from zero) or
  :class:`~matchlock.core.events.PieceFinished` with the URL as ``source``. A resolvable on a host
  found down earlier in the job fails at once, without a request
  (:mod:`matchlock.downloads.hosts`); a transient failure retried at once because no other
  resolvable is left is logged, not an event;
- :class:`~matchlock.core.events.PieceFailed` with every failure when no resolvable succeeded.

A job that has the room's resolver (:mod:`matchlock.downloads.resolvers.room`) gives every
piece one more source, ``room:``, at the job's ``room_source`` (after the resolvables by default,
before them, or never; a piece with no resolvable has only the room). The room delivers the
piece's archive (checked by its sha256 as any download) or, for a piece pinned by its folder
digest, its folder stream, which is unpacked and checked file by file and against the pinned
folder digest before the folder is published. Each holder that failed is a
``ResolvableFailed`` naming it (``room:bob``), and the piece is finished from
``room:<holder>``. A job with the room's resolver also keeps each verified archive it unpacked
(:mod:`matchlock.downloads.kept`, a hard link of the part), so this member can serve it.

Progress is coalesced: a ``PieceProgress`` is emitted when at least 1% of the piece, and at least
:data:`PROGRESS_STEP_MIN` bytes, arrived since the last one. So a resolvable yields at most 100
of them, a piece under 256 KiB none, and ``done`` never goes down within one resolvable (bytes
that must be fetched again after a server ignored a resume are not reported twice).

A folder that exists but does not verify is never trusted: it is reported through
``on_notice`` as a :class:`FolderRejected` and the piece is installed afresh into the cache
(a folder in the game's files is left as it is). When a download verified but its archive is
refused, or the unpacked folder does not match ``folder_sha256``, no other resolvable is tried:
they all serve these same bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Container
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from matchlock.core.config import Piece, RoomSource
from matchlock.core.errors import FolderDigestError
from matchlock.core.events import (
    MAX_FAILURES,
    Event,
    PieceFailed,
    PieceFinished,
    PieceProgress,
    PieceStarted,
    ResolvableFailed,
    ResolvableFailure,
    clip,
)
from matchlock.core.events import (
    FolderRejected as FolderRejectedEvent,
)
from matchlock.downloads.cache import Cache, piece_file_name
from matchlock.downloads.errors import ArchiveError
from matchlock.downloads.fetch import Fetcher
from matchlock.downloads.from_room import archive_problem, room_forms
from matchlock.downloads.install import InstallFailed, install_part, install_stream
from matchlock.downloads.kept import kept_archive, record_verified
from matchlock.downloads.resolvers import (
    ResolveFailed,
    Wanted,
)
from matchlock.downloads.resolvers.room import ROOM_SCHEME, ROOM_URL, Form, RoomRequest
from matchlock.downloads.sink import INLINE_BYTES, PartFile
from matchlock.downloads.turns import (
    PROGRESS_STEP_MIN,
    FinalFailure,
    ProgressReporter,
    Turns,
    piece_sources,
)
from matchlock.downloads.unpack import UnpackLimits
from matchlock.downloads.verify import folder_problem

__all__ = [
    "PROGRESS_STEP_MIN",
    "ROOM_SOURCE",
    "FolderRejected",
    "PieceInstaller",
    "PieceOutcome",
    "RoomSource",
    "piece_sources",
]

logger = logging.getLogger("matchlock.downloads")

ROOM_SOURCE = ROOM_SCHEME
"""The scheme of the room's resolver, as a download job's ``resolvers`` name it."""


@dataclass(frozen=True)
class FolderRejected:
    """A folder where ``piece`` could have been (``where``: the game's files or the cache) that
    does not verify, so it was not used; ``reason`` says what differs."""

    piece: str
    folder: Path
    where: Literal["engine", "cache"]
    reason: str

    def __str__(self) -> str:
        return f"{self.piece}: {self.where} folder {self.folder} not used: {self.reason}"


@dataclass(frozen=True)
class PieceOutcome:
    """How one piece ended: its folder, or (folder None) why each resolvable failed."""

    folder: Path | None
    failures: tuple[ResolvableFailure, ...] = ()


class PieceInstaller:
    """Installs pieces into ``cache``, reporting each step through ``emit``.

    ``listed``, when given, holds the names of the cache's folders when the job started: a
    piece whose folder was not among them skips the first look for it without the lock (the
    look made once the lock is held still finds a folder another process installed since).

    A piece of at most :data:`~matchlock.downloads.sink.INLINE_BYTES` that does not unpack is
    handled on the event loop from start to end: its lock is taken, its folder looked for,
    and its file linked and published there, as its bytes are already hashed and written
    there (:mod:`~matchlock.downloads.sink`). Measured with 2,000 pieces of 64 KiB, the two
    hops to a worker thread and back cost more than the few folder operations they carried
    (0.1 to 0.4 ms of kernel time a piece): each hop waits for the thread to be scheduled
    and to take the GIL, then for the loop to be woken, and every piece waited for two of
    them in turn (7 ms each, with the loop idle half the time, at 16 pieces at once)."""

    def __init__(
        self,
        *,
        cache: Cache,
        fetcher: Fetcher,
        executor: Executor,
        limits: UnpackLimits,
        emit: Callable[[Event], None],
        clock: Callable[[], float],
        on_notice: Callable[[FolderRejected], None] | None = None,
        user_id: str = "local",
        room_source: RoomSource = "never",
        keep_archives: bool = False,
        listed: Container[str] | None = None,
    ) -> None:
        self._listed = listed
        self._room_source = room_source
        self._keep_archives = keep_archives
        self._cache = cache
        self._fetcher = fetcher
        self._executor = executor
        self._limits = limits
        self._emit = emit
        self._clock = clock
        self._on_notice = on_notice
        self._user = user_id

    async def install(self, key: str, piece: Piece, engine_folder: Path | None) -> PieceOutcome:
        """Make ``piece`` (addressed ``key``) available; never raises for a bad source."""
        self._emit(PieceStarted(at=self._clock(), user_id=self._user, piece=key))
        folder = self._cache.folder(key, piece)
        if engine_folder is not None and await self._trusted(key, piece, engine_folder, "engine"):
            return self._finished(key, engine_folder, "engine")
        # A first look without the lock: the common case of a cache hit waits for nobody.
        maybe_there = self._listed is None or folder.name in self._listed
        if maybe_there and await self._trusted(key, piece, folder, "cache", report=False):
            return self._finished(key, folder, "cache")
        here = _on_the_loop(piece)
        digest = piece.content_digest
        async with self._cache.locked(digest, self._executor, folder, here=here) as held:
            if await self._trusted(key, piece, folder, "cache", exists=held.found):
                return self._finished(key, folder, "cache")
            outcome = await self._obtain(key, piece, folder, PartFile(held))
            held.installed = outcome.folder is not None
        if outcome.folder is not None and self._keep_archives and piece.archive is not None:
            await self._record_verified(key, piece, outcome.folder)  # the part's name is gone
        return outcome

    async def _record_verified(self, key: str, piece: Piece, folder: Path) -> None:
        """Record the file this member serves ``piece``'s archive from as verified."""
        digest = piece.content_digest
        served = folder / piece_file_name(key, piece) if piece.unpack == "none" else None
        path = served or kept_archive(self._cache, digest)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, record_verified, self._cache, digest, path)

    def _finished(self, key: str, folder: Path, source: str) -> PieceOutcome:
        self._emit(PieceFinished(at=self._clock(), user_id=self._user, piece=key, source=source))
        return PieceOutcome(folder)

    async def _trusted(
        self,
        key: str,
        piece: Piece,
        folder: Path,
        where: Literal["engine", "cache"],
        *,
        report: bool = True,
        exists: bool | None = None,
    ) -> bool:
        """Whether ``folder`` holds exactly the piece (``exists``: whether it is there, when
        already looked at; a folder that does not verify is reported unless ``report`` is
        False)."""
        if not (os.path.lexists(folder) if exists is None else exists):
            return False
        recorded = self._cache.recorded_digest(folder) if where == "cache" else None
        name = piece_file_name(key, piece)
        loop = asyncio.get_running_loop()
        problem = await loop.run_in_executor(
            self._executor, folder_problem, folder, piece, name, recorded
        )
        if problem is not None and report:
            notice = FolderRejected(key, folder, where, problem)
            logger.info("%s", notice)
            self._emit(
                FolderRejectedEvent(
                    at=self._clock(), user_id=self._user, piece=key, folder=str(folder),
                    where=where, reason=problem[:1024],
                )
            )  # fmt: skip
            if self._on_notice is not None:
                self._on_notice(notice)
        return problem is None

    async def _obtain(self, key: str, piece: Piece, folder: Path, part: PartFile) -> PieceOutcome:
        """Try the sources (call holding the content's lock): each in order once, then those
        that failed transiently again, see :class:`~matchlock.downloads.turns.Turns`."""
        sources = piece_sources(piece, self._room_source)
        turns = Turns(len(sources), self._fetcher.policy)
        attempt = _Attempt(self, key, piece, folder, part)
        failures = attempt.failures
        while (turn := await turns.next()) is not None:
            index, url = sources[turn]
            resume = not part.begun or part.source == url
            failed = await attempt.run(url, resume, last=turns.left() == 0)
            if failed is None:
                return self._finished(key, folder, attempt.source)
            reason, again = failed.reason, turns.failed(turn, failed)
            if again == "at_once":
                logger.info("%s %s: %s; trying it again", key, url, reason)
                continue  # nothing else left to try: a retry, not a failure of the resolvable
            if again == "later":
                reason = f"{reason} (attempt {turns.tries(turn)} of "
                reason += f"{turns.attempts}; tried again after the other resolvables)"
            attempt.failed(index, failed.source or url, reason)
        try:
            await part.drain()  # what is in the part is kept for a later job to resume
        except OSError:  # the disk refused the last bytes (full?): keep none of them
            with contextlib.suppress(OSError):
                await part.restart()
        kept = tuple(failures[:MAX_FAILURES])  # an event's bound: the first ones tried
        self._emit(PieceFailed(at=self._clock(), user_id=self._user, piece=key, failures=kept))
        return PieceOutcome(None, kept)

    async def _attempt(
        self,
        key: str,
        piece: Piece,
        folder: Path,
        part: PartFile,
        *,
        url: str,
        progress: Callable[[int], None],
        resume: bool,
    ) -> ResolveFailed | None:
        """One request of one resolvable: None when installed, else why not (a failure that
        every resolvable would share is marked final)."""
        try:
            assert piece.archive is not None  # a piece with resolvables pins its archive
            mirrors = tuple(r.url for r in piece.resolvables if r.url != url)
            wanted = Wanted(key, *piece.archive, mirrors=mirrors)
            await self._fetcher.fetch(url, wanted, part, progress, resume=resume)
        except ResolveFailed as failure:
            return failure
        except OSError as error:
            return FinalFailure(f"local error while downloading: {error}")
        return await self._install_archive(key, piece, part, folder)

    async def _install_archive(
        self, key: str, piece: Piece, part: PartFile, folder: Path
    ) -> ResolveFailed | None:
        try:
            if _on_the_loop(piece):
                self._install(key, piece, part, folder)
            else:
                await part.held.run(self._install, key, piece, part, folder)
        except (ArchiveError, InstallFailed, FolderDigestError) as error:
            await part.restart()  # the right bytes, but unusable: nothing worth resuming
            return FinalFailure(
                f"{error}; every resolvable serves these same bytes, none other tried"
            )
        except OSError as error:
            return FinalFailure(f"local error while installing: {error}")
        return None

    async def _from_room(
        self, attempt: _Attempt, resume: bool, *, wait: bool
    ) -> ResolveFailed | None:
        """One turn of the room: ask it for the piece's archive, else its folder stream;
        with ``wait`` (no other source is left), wait while nobody can give it yet."""
        key, piece, folder, part = attempt.key, attempt.piece, attempt.folder, attempt.part

        async def verify(form: Form) -> str | None:
            if form.name == "archive":
                return await archive_problem(piece, part)
            await part.drain()
            return await part.held.run(install_stream, self._cache, piece, part.path, folder)

        forms = room_forms(key, piece, part, attempt.progress)
        request = RoomRequest(key, forms, resume, verify, attempt.holder_failed, wait=wait)
        try:
            delivered = await self._fetcher.room().obtain(request)
        except ResolveFailed as failure:
            return failure
        except OSError as error:
            return FinalFailure(f"local error while downloading: {error}")
        attempt.source = f"{ROOM_URL}{delivered.holder}"
        if delivered.form == "folder":
            return None  # unpacked and published by verify()
        return await self._install_archive(key, piece, part, folder)

    def _reporter(self, key: str, piece: Piece) -> ProgressReporter:
        return ProgressReporter(self._emit_progress(key), piece.content_size)

    def _emit_progress(self, key: str) -> Callable[[int], None]:
        def emit(done: int) -> None:
            self._emit(PieceProgress(at=self._clock(), user_id=self._user, piece=key, done=done))

        return emit

    def _install(self, key: str, piece: Piece, part: PartFile, folder: Path) -> None:
        """Turn the verified part into ``folder`` (a worker thread's work, but for a small
        piece that does not unpack: see the class docs), then drop the part's name."""
        keep = self._keep_archives and piece.unpack != "none" and piece.archive is not None
        install_part(
            self._cache, key, piece, part.path, folder=folder, limits=self._limits, keep=keep
        )
        part.held.drop_name()  # its bytes are the folder's now (still under the lock)


def _on_the_loop(piece: Piece) -> bool:
    """Whether ``piece`` is handled on the event loop from start to end (see
    :class:`PieceInstaller`)."""
    return piece.unpack == "none" and piece.content_size <= INLINE_BYTES


class _Attempt:
    """One piece's turns at its sources: the progress reporter of the current source, the
    source that delivered (``source``), and every failure, recorded and emitted."""

    def __init__(
        self, installer: PieceInstaller, key: str, piece: Piece, folder: Path, part: PartFile
    ) -> None:
        self.key, self.piece, self.folder, self.part = key, piece, folder, part
        self.failures: list[ResolvableFailure] = []
        self.source = ""
        self._installer = installer
        self._progress = installer._reporter(key, piece)

    def progress(self, done: int) -> None:
        """Bytes held so far from the current source."""
        self._progress(done)

    async def run(self, url: str, resume: bool, *, last: bool) -> ResolveFailed | None:
        """One turn of source ``url`` (``last``: no other is left to try): None when the piece
        is installed."""
        if url == ROOM_URL:
            return await self._installer._from_room(self, resume, wait=last)
        self.source = url
        return await self._installer._attempt(
            self.key, self.piece, self.folder, self.part,
            url=url, progress=self.progress, resume=resume,
        )  # fmt: skip

    def failed(self, index: int, url: str, reason: str) -> None:
        """Record and emit that source ``url`` failed; progress starts again from zero."""
        installer = self._installer
        failure = ResolvableFailure(index=index, url=url, reason=clip(reason))
        self.failures.append(failure)
        installer._emit(
            ResolvableFailed(
                at=installer._clock(), user_id=installer._user, piece=self.key, failure=failure
            )
        )
        self._progress = installer._reporter(self.key, self.piece)

    def holder_failed(self, failure: ResolveFailed) -> None:
        """A holder of the room failed (it lied, it was cut): the room asks the next one."""
        self.failed(len(self.piece.resolvables), failure.source or ROOM_URL, failure.reason)
