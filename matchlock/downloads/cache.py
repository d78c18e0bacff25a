"""The content-addressed cache: where installed pieces live, and how they get there safely.

The cache *is* the install location. Every installed piece is a folder directly under the cache
root, named after what it holds rather than after any config, so every config and room that
asks for the same content shares one folder:

- ``<sha256>-zip`` and ``<sha256>-tar``: the unpacked archive whose bytes have that sha256;
- ``<sha256>-file-<name>``: a piece that does not unpack, as the one file ``<name>``;
- ``<folder_sha256>-folder``: a piece pinned by its folder only (no archive), as received
  from a room member in a folder stream (:mod:`matchlock.downloads.folder_stream`).

The content's lock and ``.part`` are named by the piece's
:attr:`~matchlock.core.config.Piece.content_digest`: the archive's sha256, or the folder digest
of a folder-only piece (whose ``.part`` then holds the folder stream).

Beside them, ``.matchlock/`` holds the cache's own bookkeeping, never content:

- ``tmp/<sha256>.part``: a download in progress, kept across runs so it can be resumed, and
  the lock of that content while a process downloads or installs it;
- ``tmp/<folder>.staging.<token>``: a folder being unpacked, renamed into place only once whole;
- ``digests/<folder>``: the folder digest recorded at install time for an archive piece whose
  config gives no ``folder_sha256``, so the folder can still be checked before it is trusted.

Rules this module keeps: a folder appears under its final name only by one ``rename`` of a
complete staging folder, so a crash never leaves a folder that looks installed; everything that
writes a given content (its ``.part``, its staging folders, its final folder) happens under that
content's lock, so two processes, or two pieces of one process, never interleave. The lock is an
``flock`` on the ``.part`` file itself (creating files is the slow part of installing many small
pieces, so there is no separate lock file). The part stays at its path until its content is
published: a piece that does not unpack gets its file in the staging folder as a hard link to
the part (no copy, no second file created), and the part's name is removed once the folder is
published (:meth:`HeldContent.drop_name`, in the same hop to a worker thread) or on release,
still under the lock either way. A waiter that then gets the lock sees that its file is no
longer the one at that path and opens again. The kernel drops the lock of a killed process; the
leftovers of that process are removed by the next holder. A killed holder always leaves its part
at its path (only a holder that ends cleanly removes it, after its own staging folders), so a
holder that had to create the part knows there is nothing to clear and does not list ``tmp/``;
leftovers whose part was removed by hand are cleared when a job starts
(:meth:`Cache.sweep_leftovers`). (``flock`` makes this module POSIX-only: Linux, macOS, the BSDs.)

Taking the lock and looking for the installed folder are one hop to a worker thread, and so
are publishing and removing the part's name; a small piece that does not unpack makes both on
the event loop instead (:class:`~matchlock.downloads.piece.PieceInstaller` says why).

Nothing is fsynced: a cached folder is verified again every time it is about to be trusted
(:mod:`matchlock.downloads.verify`), so a file torn by a power cut is caught and re-installed.
That holds for a recorded folder digest too (written to a temporary file and renamed, never
synced): one that a power cut left empty, torn or missing no longer matches its folder, or
leaves it unverifiable, and either way the folder is installed again, never trusted.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Executor, Future, wait
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from matchlock.core.config import Piece, is_safe_name

__all__ = ["STATE_FOLDER", "Cache", "HeldContent", "link_or_copy", "piece_file_name"]

STATE_FOLDER = ".matchlock"
"""The cache's bookkeeping folder, beside the installed pieces."""

_T = TypeVar("_T")

_LOCK_POLL_FIRST = 0.01
_LOCK_POLL_MAX = 0.25


def piece_file_name(key: str, piece: Piece) -> str:
    """The name of the one file of a piece that does not unpack.

    ``filename`` when the config gives one; otherwise the last segment of the first resolvable's
    URL (so every mirror installs the same folder) when that is a safe name; otherwise (no
    resolvable either) the piece id.
    """
    if piece.filename is not None:
        return piece.filename
    if not piece.resolvables:
        return key.rsplit("/", 1)[-1]
    segment = unquote(urlsplit(piece.resolvables[0].url).path.rsplit("/", 1)[-1])
    return segment if is_safe_name(segment) else key.rsplit("/", 1)[-1]


class Cache:
    """A cache rooted at ``root`` (created on :meth:`prepare`). See the module docs for layout."""

    def __init__(self, root: Path) -> None:
        self.root = root.absolute()
        state = self.root / STATE_FOLDER
        self.tmp = state / "tmp"
        self.digests = state / "digests"

    def prepare(self) -> None:
        """Create the cache's folders if they are missing."""
        for folder in (self.tmp, self.digests):
            folder.mkdir(parents=True, exist_ok=True)

    def folder(self, key: str, piece: Piece) -> Path:
        """Where ``piece`` is (or will be) installed."""
        if piece.sha256 is None:
            return self.root / f"{piece.content_digest}-folder"
        if piece.unpack == "none":
            return self.root / f"{piece.sha256}-file-{piece_file_name(key, piece)}"
        return self.root / f"{piece.sha256}-{piece.unpack}"

    def part_path(self, sha256: str) -> Path:
        """The partial download of the content with this digest."""
        return self.tmp / f"{sha256}.part"

    def new_staging(self, folder: Path) -> Path:
        """A fresh, empty staging folder for ``folder`` (call under the content's lock)."""
        staging = self.tmp / f"{folder.name}.staging.{secrets.token_hex(6)}"
        staging.mkdir()
        return staging

    def recorded_digest(self, folder: Path) -> str | None:
        """The folder digest recorded when ``folder`` was installed, if one was."""
        try:
            return (self.digests / folder.name).read_text("ascii").strip()
        except (OSError, UnicodeDecodeError):
            return None

    def record_digest(self, folder: Path, digest: str) -> None:
        """Record ``digest`` for ``folder`` (before the folder is published)."""
        path = self.digests / folder.name
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            temporary.write_bytes(digest.encode("ascii") + b"\n")
            os.replace(temporary, path)  # unsynced: see the module docs
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise

    def publish(self, staging: Path, folder: Path) -> None:
        """Move a complete ``staging`` folder to ``folder``, replacing whatever was there.

        A folder already there (one that failed verification) is first moved aside, so the final
        name only ever holds a whole folder; for a moment it holds nothing, never a wrong one.
        """
        aside = None
        if os.path.lexists(folder):
            aside = self.tmp / f"{folder.name}.old.{secrets.token_hex(6)}"
            os.rename(folder, aside)
        os.rename(staging, folder)
        if aside is not None:
            _remove(aside)

    def clear_leftovers(self, sha256: str) -> None:
        """Remove staging and moved-aside folders of this content (call under its lock: any
        found then belong to a process that died)."""
        for name in os.listdir(self.tmp):
            if name.startswith(sha256) and _is_leftover(name):
                _remove(self.tmp / name)

    def sweep_leftovers(self) -> None:
        """Clear the leftovers of every content that has some and that nobody holds now.

        A holder clears its content's leftovers only when it found the part already there
        (a killed holder leaves it); this catches those whose part was removed by hand. One
        listing of ``tmp/``, made once per job."""
        digests = {name[:64] for name in os.listdir(self.tmp) if _is_leftover(name)}
        for sha256 in sorted(digests):
            with self.held_now(sha256, clear=True):
                pass  # held or busy: either way nothing more to do here

    @asynccontextmanager
    async def locked(
        self,
        sha256: str,
        executor: Executor,
        folder: Path | None = None,
        *,
        here: bool = False,
    ) -> AsyncIterator[HeldContent]:
        """Hold the lock of the content with this digest, through its open ``.part`` file.

        Waits without blocking the loop; the file operations run on ``executor``. Leftovers
        of dead processes are cleared once the lock is held. With ``folder``, whether it
        exists once the lock is held is looked at in the same hop (``held.found``). With
        ``here``, the lock is taken (and the folder looked for) on the event loop itself,
        without a hop: for a small piece, whose whole install costs less than hops to a thread
        (:class:`~matchlock.downloads.piece.PieceInstaller`). On release
        (also when cancelled) the work still running on the content is waited for, then the
        ``.part`` is removed when it is empty or its bytes were installed (unless
        :meth:`HeldContent.drop_name` removed it already), still under the lock.
        """
        path = self.part_path(sha256)
        pause = _LOCK_POLL_FIRST
        while (taken := await self._take(executor, path, sha256, folder, here)) is None:
            await asyncio.sleep(pause)
            pause = min(pause * 2, _LOCK_POLL_MAX)
        fd, found = taken
        held = HeldContent(path, fd, executor, found)
        try:
            yield held
        finally:
            held.settle()
            try:
                if not held.name_dropped and (held.installed or os.fstat(fd).st_size == 0):
                    held.drop_name()
            finally:
                os.close(fd)

    async def _take(
        self, executor: Executor, path: Path, sha256: str, folder: Path | None, here: bool
    ) -> tuple[int, bool | None] | None:
        if here:
            return self._lock_and_look(path, sha256, folder)
        return await self._lock_once(executor, path, sha256, folder)

    async def _lock_once(
        self, executor: Executor, path: Path, sha256: str, folder: Path | None
    ) -> tuple[int, bool | None] | None:
        """One :meth:`_try_lock` on the executor (and, once held, a look for ``folder``).
        When cancelled meanwhile, a lock it took is released (never leaked to block this
        content for the process's lifetime)."""
        work = executor.submit(self._lock_and_look, path, sha256, folder)
        try:
            return await asyncio.wrap_future(work)
        except asyncio.CancelledError:
            if not work.cancel():
                with suppress(OSError):
                    if (taken := work.result()) is not None:
                        os.close(taken[0])
            raise

    def _lock_and_look(
        self, path: Path, sha256: str, folder: Path | None
    ) -> tuple[int, bool | None] | None:
        fd = self._try_lock(path, sha256)
        if fd is None:
            return None
        return fd, None if folder is None else os.path.lexists(folder)

    @contextmanager
    def held_now(self, sha256: str, *, clear: bool = False) -> Iterator[bool]:
        """Hold this content's lock for a synchronous task, without waiting: yields True while
        held, or False (holding nothing) when another process or task has the content right
        now. On release the ``.part`` is removed when empty, as :meth:`locked` does. Used by
        ``matchlock cache verify`` and ``gc`` (:mod:`matchlock.downloads.manage`). With
        ``clear``, the content's leftovers are cleared once held even if the part was new."""
        path = self.part_path(sha256)
        fd = self._try_lock(path, sha256, clear=clear)
        if fd is None:
            yield False
            return
        try:
            yield True
        finally:
            try:
                if os.fstat(fd).st_size == 0 and _is_file_at(fd, path):
                    os.unlink(path)
            finally:
                os.close(fd)

    def _try_lock(self, path: Path, sha256: str, *, clear: bool = False) -> int | None:
        """The locked ``.part`` file's descriptor, or None when another holder has it.

        Leftovers are cleared (``tmp/`` listed) only when the part was already there or with
        ``clear``: a part this call created had no dead holder (see the module docs)."""
        flags = os.O_RDWR | os.O_CREAT | os.O_APPEND
        try:
            fd, created = os.open(path, flags | os.O_EXCL, 0o644), True
        except FileExistsError:
            fd, created = os.open(path, flags, 0o644), False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        if not _is_file_at(fd, path):  # the holder we waited for removed it
            os.close(fd)
            return None
        if clear or not created:
            self.clear_leftovers(sha256)
        return fd


class HeldContent:
    """The lock of one content: its ``.part`` file at ``path``, open as ``fd``.

    Work on the content's files goes through :meth:`run`, so that releasing the lock (closing
    ``fd``) waits for it: a worker thread must never write to a descriptor that was closed, and
    perhaps reused, under it. Set ``installed`` once the part's bytes are in the installed
    folder: the part is then removed on release. Until then the part stays at ``path``
    (installing links or copies it, never moves it), so every waiter keeps waiting on this file.
    """

    def __init__(self, path: Path, fd: int, executor: Executor, found: bool | None = None) -> None:
        self.path = path
        self.fd = fd
        self.installed = False
        self.found = found
        """Whether the folder :meth:`Cache.locked` was asked to look for existed once the lock
        was held (None: it was asked for none)."""
        self.name_dropped = False
        """Whether :meth:`drop_name` removed the part's name already."""
        self._executor = executor
        self._in_flight: list[Future[Any]] = []

    def drop_name(self) -> None:
        """Remove the part's name if it is still this file's (call holding the lock: from a
        worker thread once the part's bytes are published, or on release). A waiter that
        then gets this file sees it is no longer the one at ``path`` and opens again."""
        if _is_file_at(self.fd, self.path):
            os.unlink(self.path)
        self.name_dropped = True

    def run(self, func: Callable[..., _T], *args: object) -> asyncio.Future[_T]:
        """Run ``func(*args)`` on the executor as work on this content."""
        return asyncio.wrap_future(self.submit(func, *args))

    def submit(self, func: Callable[..., _T], *args: object) -> Future[_T]:
        """:meth:`run`, for work awaited from a thread: its future is the executor's."""
        work = self._executor.submit(func, *args)
        self._in_flight = [f for f in self._in_flight if not f.done()]
        self._in_flight.append(work)
        return work

    def settle(self) -> None:
        """Block until no work on this content is running (it is never more than a part's
        two batches in hand, see :mod:`matchlock.downloads.sink`, or one install, and only
        waits at all when the holder was cancelled)."""
        wait(self._in_flight)
        self._in_flight = []


def _is_leftover(name: str) -> bool:
    """Whether ``name`` in ``tmp/`` is a staging or moved-aside folder."""
    return ".staging." in name or ".old." in name


def _is_file_at(fd: int, path: Path) -> bool:
    try:
        current = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (current.st_ino, current.st_dev) == (held.st_ino, held.st_dev)


def link_or_copy(source: Path, target: Path) -> None:
    """Give ``source``'s file a second name ``target`` (a copy where links are not supported)."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with suppress(FileNotFoundError):
            path.unlink()
