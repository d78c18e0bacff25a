"""Logs as files: the embedded default store.

:class:`FileRepository` keeps each log in ``<directory>/<id>.log``, a JSON Lines file (the layout
``matchlock serve --log-dir`` has always written); :class:`FileStore` is one such file, appended
with ``aiofiles``.

The file is unbuffered: each append is one write straight to the operating system (one hop to
aiofiles' thread; a buffered file would need a second one to flush), so what was appended
survives the process, and ``durable`` appends add an ``fsync``, so it survives the machine. The
first durable append also fsyncs the directory, so a new log's name survives a power loss with
its first lines (POSIX asks for both).

This module moves bytes; it must never parse or check a line (that is :mod:`matchlock.core.chain`).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiofiles
import aiofiles.threadpool.binary

from matchlock.core.errors import LogError, UsageError

__all__ = ["FileRepository", "FileStore", "fsync_directory", "write_file_atomically"]

SUFFIX = ".log"
"""The file name ending of a log: the log ``r1`` is ``r1.log``."""


class FileStore:
    """A log in a JSON Lines file at ``path`` (created by the first append)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: aiofiles.threadpool.binary.AsyncFileIO | None = None
        self._directory_synced = False

    @property
    def name(self) -> str:
        """The file's path."""
        return str(self.path)

    async def append(self, lines: Sequence[bytes], durable: bool) -> None:
        """Append the lines with one write (more only if the OS takes part of them); fsync
        when ``durable`` (and, the first time, the directory that holds the file)."""
        if self._file is None:
            self._file = await aiofiles.open(self.path, "ab", buffering=0)
        data = memoryview(b"".join(lines))
        if durable:  # write and sync in one hop to a thread: a room host does this per batch
            sync_directory = not self._directory_synced
            await asyncio.get_running_loop().run_in_executor(
                _SYNCS, _write_durably, self._file.fileno(), data, self.path
            )
            if sync_directory:
                await asyncio.to_thread(fsync_directory, self.path.parent)
                self._directory_synced = True
            return
        while data:
            written = await self._file.write(data)
            if not written:
                raise OSError(f"{self.path}: the file took none of {len(data)} bytes")
            data = data[written:]

    def read(self, start: int = 0) -> Iterator[bytes]:
        """The file's lines from ``start``, streaming."""
        with self.path.open("rb") as file:
            for index, line in enumerate(file):
                if index >= start:
                    yield line

    async def truncate(self, size: int) -> None:
        """Cut the file to ``size`` bytes."""
        await asyncio.to_thread(os.truncate, self.path, size)

    async def drop_torn(self, size: int) -> None:
        """Cut the last ``size`` bytes (a torn last line) off the file."""
        if size:
            await self.truncate((await asyncio.to_thread(os.path.getsize, self.path)) - size)

    async def close(self) -> None:
        """Close the file if it is open."""
        if self._file is not None:
            await self._file.close()
            self._file = None


_SYNCS = ThreadPoolExecutor(max_workers=32, thread_name_prefix="matchlock-fsync")
"""Where durable appends run: a room host syncs every room log a batch wrote before it sends
the batch's frames, so the syncs of many rooms wait on the disk side by side (the file system
commits them together) rather than a few at a time in the loop's default executor."""


def _write_durably(fd: int, data: memoryview, path: Path) -> None:
    while data:
        written = os.write(fd, data)
        if not written:
            raise OSError(f"{path}: the file took none of {len(data)} bytes")
        data = data[written:]
    os.fsync(fd)


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


def fsync_directory(folder: Path) -> None:
    """Make a rename in ``folder`` durable where the platform allows opening a folder."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # Windows cannot open a folder this way; its renames need no folder sync.
    try:
        os.fsync(fd)
    except OSError:
        pass  # Some filesystems refuse to sync a folder; the rename itself already happened.
    finally:
        os.close(fd)


class FileRepository:
    """Logs by id as ``<directory>/<id>.log`` files; the directory is made when the logs are
    first listed or created."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def path(self, log_id: str) -> Path:
        """The file of the log ``log_id``."""
        if not log_id or log_id in (".", "..") or "/" in log_id or "\\" in log_id:
            raise UsageError(f"{log_id!r} is not a log id: a log id is a plain file name")
        return self.directory / f"{log_id}{SUFFIX}"

    async def ids(self) -> list[str]:
        """The id of every ``*.log`` file in the directory, sorted. The directory is made if it
        does not exist, so that a host given a place it cannot write fails as it starts."""
        return await asyncio.to_thread(self._ids)

    def _ids(self) -> list[str]:
        self.directory.mkdir(parents=True, exist_ok=True)
        paths = self.directory.glob(f"*{SUFFIX}")
        return sorted(p.name.removesuffix(SUFFIX) for p in paths if p.is_file())

    def create(self, log_id: str) -> FileStore:
        """A new log file (made by its first append); its directory is made now."""
        path = self.path(log_id)
        if path.exists():
            raise UsageError(f"{path}: a log already exists there; open it to continue it")
        path.parent.mkdir(parents=True, exist_ok=True)
        return FileStore(path)

    def store(self, log_id: str) -> FileStore:
        """The existing log file of ``log_id``."""
        path = self.path(log_id)
        if not path.is_file():
            raise LogError(f"{path}: no such log file")
        return FileStore(path)

    async def remove(self, log_id: str) -> None:
        """Delete the log file of ``log_id``."""
        await asyncio.to_thread(self.path(log_id).unlink)
