"""Logs as files: the embedded default store.

:class:`FileRepository` keeps each log in ``<directory>/<id>.log``, a JSON Lines file (the layout
``matchlock serve --log-dir`` has always written); :class:`FileStore` is one such file.

An append is one write straight to the operating system, made at once from the event loop (a
write to the page cache costs less than a hop to a thread), so what was appended survives the
process. A ``durable`` append then makes it survive the machine, as the repository's ``sync``
says:

- ``"thread"`` (the default): it fsyncs its file in a worker thread, one hop per file, so that
  the loop goes on (a member's downloads, a download job's other pieces) while the disk works.
  The first durable append also fsyncs the directory, so a new log's name survives a power
  loss with its first lines (POSIX asks for both).
- ``"journal"``: every append of every log of the repository is also queued in the
  repository's write-ahead journal (:mod:`matchlock.store.journal`), and the appends of one
  turn of the loop are made durable together by one ``fdatasync`` in the loop's own thread;
  the files themselves are synced at checkpoints. A room host's logs are kept so
  (:class:`~matchlock.app.hosting.RoomHost`): a batch's frames wait for the disk anyway, a
  batch writes many room logs, and a hop to a thread and back cost the host more CPU than the
  sync itself. The journal is recovered when the repository is first used (listing its logs,
  creating or opening one).

This module moves bytes; it must never parse or check a line (that is :mod:`matchlock.core.chain`).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

from matchlock.core.errors import LogError, UsageError
from matchlock.store.journal import CAPACITY, MIN_CAPACITY, Journal, fsync_directory

__all__ = ["FileRepository", "FileStore", "Sync", "fsync_directory", "write_file_atomically"]

Sync = Literal["thread", "journal"]
"""How a durable append reaches the disk: its file's fsync in a worker thread, or the
repository's journal (see the module docs)."""

SUFFIX = ".log"
"""The file name ending of a log: the log ``r1`` is ``r1.log``."""


class FileStore:
    """A log in a JSON Lines file at ``path`` (created by the first append), whose durable
    appends fsync the file in a worker thread, or go through ``journal`` when given (see the
    module docs)."""

    def __init__(self, path: Path, journal: Journal | None = None) -> None:
        self.path = path
        self.journal = journal
        self._fd: int | None = None
        self._directory_synced = False
        self._syncing: asyncio.Future[None] | None = None

    @property
    def name(self) -> str:
        """The file's path."""
        return str(self.path)

    async def append(self, lines: Sequence[bytes], durable: bool) -> None:
        """Append the lines with one write (more only if the OS takes part of them), at once;
        when ``durable``, return once they are synced: by the journal, or by an fsync of the
        file (and, the first time, of the directory that holds it)."""
        if self.journal is not None:
            synced = self._journaled(lines, durable, later=True)
            if synced is not None:
                await synced
            return
        fd = self._open()
        _write_all(fd, memoryview(b"".join(lines)), self.path)
        if durable:
            directory = None if self._directory_synced else self.path.parent
            loop = asyncio.get_running_loop()
            syncing = self._syncing = loop.run_in_executor(_SYNCS, _fsync, fd, directory)
            await asyncio.shield(syncing)  # a cancelled append's sync still ends before close
            self._directory_synced = True

    @property
    def writes_now(self) -> bool:
        """Whether :meth:`write_now` may be used: the file's appends go through a journal."""
        return self.journal is not None

    def write_now(self, lines: Sequence[bytes], durable: bool) -> asyncio.Future[None] | None:
        """:meth:`append` without awaiting (a journaled file only): the lines are written at
        once and queued in the journal, whose record the caller then writes with
        :meth:`FileRepository.commit_now`; when ``durable``, the future that ends once they
        are synced."""
        return self._journaled(lines, durable, later=False)

    def _journaled(
        self, lines: Sequence[bytes], durable: bool, later: bool
    ) -> asyncio.Future[None] | None:
        assert self.journal is not None, "only a journaled file writes now"
        fd = self._open()
        offset, data = os.fstat(fd).st_size, b"".join(lines)
        _write_all(fd, memoryview(data), self.path)
        return self.journal.add(self.path.name, offset, data, durable, later=later)

    def open_now(self) -> None:
        """Open the file (creating it) and hold the journal now, as the first append would: a
        room host learns that it cannot (too many open files) before anyone hears of the room.
        Raises :class:`OSError`."""
        self._open()

    def _open(self) -> int:
        """The file's descriptor, opened (and the journal held) by the first append."""
        if self._fd is None:
            if self.journal is not None:
                self.journal.acquire()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        return self._fd

    def read(self, start: int = 0) -> Iterator[bytes]:
        """The file's lines from ``start``, streaming."""
        with self.path.open("rb") as file:
            for index, line in enumerate(file):
                if index >= start:
                    yield line

    async def truncate(self, size: int) -> None:
        """Cut the file to ``size`` bytes (after a checkpoint of its journal, whose records
        could otherwise put the bytes back)."""
        if self.journal is not None:
            self.journal.settle()
        await asyncio.to_thread(os.truncate, self.path, size)

    async def drop_torn(self, size: int) -> None:
        """Cut the last ``size`` bytes (a torn last line) off the file."""
        if size:
            await self.truncate((await asyncio.to_thread(os.path.getsize, self.path)) - size)

    async def close(self) -> None:
        """Close the file if it is open (once an fsync it asked for is over: a cancelled
        append's sync may still be running in its thread)."""
        if self._syncing is not None:
            await asyncio.wait([self._syncing])
            self._syncing = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            if self.journal is not None:
                self.journal.release()


def _write_all(fd: int, data: memoryview, path: Path) -> None:
    while data:
        written = os.write(fd, data)
        if not written:
            raise OSError(f"{path}: the file took none of {len(data)} bytes")
        data = data[written:]


_SYNCS = ThreadPoolExecutor(max_workers=32, thread_name_prefix="matchlock-fsync")
"""Where durable appends sync: the syncs of many room logs wait on the disk side by side (the
file system commits them together) rather than a few at a time in the loop's default executor."""


def _fsync(fd: int, directory: Path | None) -> None:
    """fsync the file ``fd`` (and ``directory``, where given)."""
    os.fsync(fd)
    if directory is not None:
        fsync_directory(directory)


def write_file_atomically(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o666) -> None:
    """Replace the file at ``path`` with ``data`` atomically (temporary file, fsync, rename).

    The new file gets ``mode`` less the process umask, like any newly created file; a link at
    ``path`` is replaced, never followed. The temporary file is removed if anything fails.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


class FileRepository:
    """Logs by id as ``<directory>/<id>.log`` files, made durable as ``sync`` says (see the
    module docs); the directory is made when the logs are first listed or created. With a
    journal, ``journal_size`` is the bytes of each of its two halves (by default
    :data:`~matchlock.store.journal.CAPACITY`)."""

    def __init__(
        self, directory: Path, sync: Sync = "thread", journal_size: int = CAPACITY
    ) -> None:
        if journal_size < MIN_CAPACITY:
            raise UsageError(
                f"a journal half of {journal_size} bytes holds no record: give at least "
                f"{MIN_CAPACITY} (a multiple of 4096 keeps its synced writes direct)"
            )
        self.directory = Path(directory)
        self.sync: Sync = sync
        self.journal = Journal(self.directory, journal_size) if sync == "journal" else None

    def commit_now(self) -> None:
        """Make every line its logs wrote now (:meth:`FileStore.write_now`) durable at once,
        instead of at the end of the loop's turn: one record of the journal, if it keeps one."""
        if self.journal is not None:
            self.journal.commit_now()

    def path(self, log_id: str) -> Path:
        """The file of the log ``log_id``."""
        if not log_id or log_id in (".", "..") or "/" in log_id or "\\" in log_id:
            raise UsageError(f"{log_id!r} is not a log id: a log id is a plain file name")
        return self.directory / f"{log_id}{SUFFIX}"

    async def ids(self) -> list[str]:
        """The id of every ``*.log`` file in the directory, sorted. The directory is made if it
        does not exist, so that a host given a place it cannot write fails as it starts."""
        self._recovered()
        return await asyncio.to_thread(self._ids)

    def _recovered(self) -> None:
        """Recover the journal, if the logs are kept with one and it exists, before any log is
        used."""
        if self.journal is not None:
            self.journal.open(create=False)

    def _ids(self) -> list[str]:
        self.directory.mkdir(parents=True, exist_ok=True)
        paths = self.directory.glob(f"*{SUFFIX}")
        return sorted(p.name.removesuffix(SUFFIX) for p in paths if p.is_file())

    def create(self, log_id: str) -> FileStore:
        """A new log file (made by its first append); its directory is made now."""
        path = self.path(log_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._recovered()
        if path.exists():
            raise UsageError(f"{path}: a log already exists there; open it to continue it")
        return FileStore(path, self.journal)

    def store(self, log_id: str) -> FileStore:
        """The existing log file of ``log_id``."""
        path = self.path(log_id)
        self._recovered()
        if not path.is_file():
            raise LogError(f"{path}: no such log file")
        return FileStore(path, self.journal)

    async def remove(self, log_id: str) -> None:
        """Delete the log file of ``log_id`` (after a checkpoint of the journal, whose records
        could otherwise make it again)."""
        if self.journal is not None:
            self.journal.settle()
        await asyncio.to_thread(self.path(log_id).unlink)
