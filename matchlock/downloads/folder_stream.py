"""Folder streams on disk: sending a verified folder, and unpacking a received stream safely.

The format is :mod:`matchlock.core.folderstream` (docs/folder-digest.md, "The folder stream").
This module is its shell:

- :func:`encode_folder_stream` checks a folder against its pin (the whole folder is read and
  its listing's sha256 compared with ``folder_sha256``) and returns a :class:`FolderStream`:
  its exact :attr:`~FolderStream.length`, and its bytes from any offset as a sync or async
  iterator of chunks (the files read 1 MiB at a time, in listing order). A file that changes
  while it is being sent (another size, other bytes) stops the stream with
  :class:`FolderChanged`: it never sends more or other bytes than its listing announced
  without saying so.
- :func:`decode_folder_stream` reads a received stream (a ``.part`` file) through the pure
  verifier and writes its files into an empty staging folder. Every check the verifier makes
  comes before the bytes it covers are trusted: the caller publishes the staging folder only
  when this returned, and removes it otherwise. Files are created exclusively, never through a
  link, never outside the staging folder.

It never installs anything itself, and never reads outside the folder it was given.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncGenerator, Generator, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from matchlock.core.errors import FolderDigestError
from matchlock.core.folderstream import (
    FileBegins,
    FileChunk,
    FolderStreamError,
    FolderStreamReader,
    ListedFile,
    StreamPart,
    StreamTooLong,
    UnsafePath,
    folder_stream_bound,
    parse_listing,
    stream_head,
)
from matchlock.downloads.folder_digest import (
    CHUNK_BYTES,
    FOLDER_DIGEST_HEADER,
    folder_files,
    folder_listing,
)

__all__ = [
    "FolderChanged",
    "FolderStream",
    "FolderStreamError",
    "decode_folder_stream",
    "encode_folder_stream",
    "folder_pin",
]

_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
_WRITE_FLAGS = (
    os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
)


class FolderChanged(FolderStreamError):
    """The folder being sent is not (or no longer) the pinned one."""


@dataclass(frozen=True)
class FolderStream:
    """The folder stream of a verified folder: its head (header, length, listing) and its
    files (listed entry, path on disk), in listing order."""

    folder: Path
    head: bytes
    files: tuple[tuple[ListedFile, Path], ...]

    @property
    def length(self) -> int:
        """The stream's exact length in bytes."""
        return len(self.head) + sum(entry.size for entry, _ in self.files)

    def chunks(self, offset: int = 0) -> Generator[bytes, None, None]:
        """The stream's bytes from ``offset`` on, at most 1 MiB per chunk (blocking reads).

        Raises :class:`FolderChanged` when a file no longer has its listed size or content
        (the chunks already given were right; a file whose sending began before ``offset``
        is checked for its size only).
        """
        if not 0 <= offset <= self.length:
            raise ValueError(f"offset {offset} is outside the stream's {self.length} bytes")
        for at in range(offset, len(self.head), CHUNK_BYTES):
            yield self.head[at : at + CHUNK_BYTES]
        start = len(self.head)
        for entry, path in self.files:
            if offset < start + entry.size:
                yield from _file_chunks(entry, path, max(0, offset - start))
            start += entry.size

    async def achunks(
        self, offset: int = 0, executor: Executor | None = None
    ) -> AsyncGenerator[bytes, None]:
        """:meth:`chunks` with every read on ``executor`` (the loop's default if None)."""
        loop = asyncio.get_running_loop()
        chunks = self.chunks(offset)
        while (chunk := await loop.run_in_executor(executor, next, chunks, None)) is not None:
            yield chunk


def _file_chunks(entry: ListedFile, path: Path, skip: int) -> Iterator[bytes]:
    """``entry``'s bytes from ``skip`` on, checked against its size (and sha256 when whole)."""
    digest = hashlib.sha256() if skip == 0 else None
    left = entry.size - skip
    try:
        file: BinaryIO = open(os.open(path, _READ_FLAGS), "rb", buffering=0)  # noqa: SIM115
    except OSError as error:
        raise FolderChanged(f"{path}: cannot be read any more: {error.strerror}") from None
    with file:
        file.seek(skip)
        while left > 0:
            chunk = file.read(min(left, CHUNK_BYTES))
            if not chunk:
                raise FolderChanged(f"{path} is shorter than its listed {entry.size} bytes")
            left -= len(chunk)
            if digest is not None:
                digest.update(chunk)
            yield chunk
        if file.read(1):
            raise FolderChanged(f"{path} is longer than its listed {entry.size} bytes")
    if digest is not None and digest.hexdigest() != entry.sha256:
        raise FolderChanged(f"{path} changed while it was sent: its sha256 is not the listed one")


def folder_pin(folder: str | os.PathLike[str]) -> tuple[str, int]:
    """``(folder_sha256, folder_size)`` of the folder at ``folder``: what a folder-only piece
    pins (blocking; raises :class:`~matchlock.core.errors.FolderDigestError` as
    :func:`~matchlock.downloads.folder_digest.folder_digest` does)."""
    lines = list(folder_listing(folder))
    # After the header, each line ends "NUL size NUL sha256hex LF" (66 bytes after the size),
    # and a path holds no NUL: the size is what follows the last NUL before those 66 bytes.
    size = sum(int(line[:-66].rsplit(b"\0", 1)[1]) for line in lines[1:])
    return hashlib.sha256(b"".join(lines)).hexdigest(), size


def encode_folder_stream(folder: Path, folder_sha256: str, folder_size: int) -> FolderStream:
    """The folder stream of ``folder``, once it verifies against the pin (blocking: every
    file is read and hashed).

    Raises :class:`FolderChanged` naming what differs: the folder cannot be digested (a link,
    a special file, an unreadable file), its digest is not ``folder_sha256``, or its files do
    not sum to ``folder_size``.
    """
    try:
        found = folder_files(folder)
        lines = [FOLDER_DIGEST_HEADER]
        buffer = bytearray(CHUNK_BYTES)
        for relative, path in found:
            size, sha256 = _size_and_sha256(path, buffer)
            lines.append(b"%s\0%d\0%s\n" % (relative, size, sha256.encode("ascii")))
    except FolderDigestError as error:
        raise FolderChanged(f"{folder} cannot be sent: {error}") from None
    except OSError as error:
        raise FolderChanged(f"{folder} cannot be sent: {error.strerror}") from None
    listing = b"".join(lines)
    digest = hashlib.sha256(listing).hexdigest()
    if digest != folder_sha256:
        raise FolderChanged(
            f"{folder}: its folder digest is {digest}, not the pinned {folder_sha256}"
        )
    try:
        listed = parse_listing(listing, folder_size)
    except FolderStreamError as error:
        raise FolderChanged(f"{folder}: {error}") from None
    files = tuple(zip(listed, (path for _, path in found), strict=True))
    return FolderStream(folder, stream_head(listing), files)


def _size_and_sha256(path: Path, buffer: bytearray) -> tuple[int, str]:
    view, digest, size = memoryview(buffer), hashlib.sha256(), 0
    with open(os.open(path, _READ_FLAGS), "rb", buffering=0) as file:
        while count := file.readinto(view):
            digest.update(view[:count])
            size += count
    return size, digest.hexdigest()


def decode_folder_stream(
    path: Path, staging: Path, *, folder_sha256: str, folder_size: int
) -> tuple[ListedFile, ...]:
    """Unpack the folder stream in the file at ``path`` into the empty folder ``staging``
    (blocking); the files it held, in listing order.

    Raises a :class:`~matchlock.core.folderstream.FolderStreamError` naming what is wrong (the
    stream is longer than :func:`~matchlock.core.folderstream.folder_stream_bound` allows, or any
    check of the verifier fails, or two listed paths are one file on this file system); then
    ``staging`` holds a partial folder the caller must remove. ``OSError`` for a local failure.
    """
    bound = folder_stream_bound(folder_size)
    if (length := os.stat(path).st_size) > bound:
        raise StreamTooLong(f"the stream is {length} bytes, more than its bound of {bound}")
    reader = FolderStreamReader(folder_sha256, folder_size)
    writer = _StagingWriter(staging)
    try:
        with open(path, "rb", buffering=0) as stream:
            while chunk := stream.read(CHUNK_BYTES):
                writer.write(reader.feed(chunk))
        reader.finish()
    finally:
        writer.close()
    assert reader.files is not None  # finish() returned: the head was read
    return reader.files


class _StagingWriter:
    """Writes what the reader reports into ``staging``: one file open at a time."""

    def __init__(self, staging: Path) -> None:
        self._root = staging
        self._fd: int | None = None

    def write(self, parts: list[StreamPart]) -> None:
        for part in parts:
            if isinstance(part, FileBegins):
                self._open(part.file)
            elif isinstance(part, FileChunk):
                assert self._fd is not None
                view = memoryview(part.data)
                while view:
                    view = view[os.write(self._fd, view) :]
            else:
                self.close()

    def _open(self, entry: ListedFile) -> None:
        target = self._root.joinpath(*entry.path.split("/"))
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(target, _WRITE_FLAGS, 0o644)
        except (FileExistsError, NotADirectoryError):
            raise UnsafePath(
                f"the listed path {entry.path!r} names a file or folder already written (two "
                "listed names are one on this file system, which ignores case or normalization)"
            ) from None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
