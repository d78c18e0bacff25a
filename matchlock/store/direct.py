"""Synced writes of the journal's records that bypass the page cache: ``O_DIRECT | O_DSYNC``.

A record written with ``pwrite`` and then ``fdatasync`` costs two system calls, a copy into the
page cache and its writeback: on the development machine about 85 us of CPU. Written straight
to the disk and synced by the same call (``O_DIRECT | O_DSYNC``), it costs about 60 us, and
returns sooner. Such a write must start and end on the disk's blocks, from memory aligned to
them, so :class:`DirectWriter` writes whole blocks of :data:`BLOCK` bytes from an ``mmap``
buffer: the last, partly filled block again with the records already in it (kept in memory,
the same bytes: writing them again changes nothing whether or not the write is whole), then
the new record, then zeros to the end of the block.

Only where the platform and the file system allow it (Linux, not tmpfs), and only for writes
whose first block it knows: :meth:`DirectWriter.write` says False when it cannot, and the
journal then writes and syncs as before. It never writes past what its caller grew the file to,
nor anything but the bytes it is given and the ones it kept.
"""

from __future__ import annotations

import errno
import mmap
import os
from pathlib import Path

__all__ = ["BLOCK", "DirectWriter"]

BLOCK = 4096
"""The block every direct write starts and ends on (the largest logical block size in use)."""

_LARGEST = 1 << 20  # records larger than this are written through the page cache
_ZEROS = bytes(BLOCK)


class DirectWriter:
    """Direct, synced writes to the file at ``path`` (see the module docs); :meth:`open` makes
    one where the platform and the file system allow it."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd
        self._buffer = mmap.mmap(-1, BLOCK * 16)
        self._end = -1  # where the bytes of the block kept in memory end (-1: none kept)
        self._tail = b""

    @classmethod
    def open(cls, path: Path) -> DirectWriter | None:
        """A writer of ``path``, or None where direct writes are not to be had."""
        flags = getattr(os, "O_DIRECT", 0)
        if not flags or not hasattr(os, "O_DSYNC"):
            return None
        try:
            fd = os.open(path, os.O_WRONLY | flags | os.O_DSYNC)
        except OSError:
            return None  # e.g. tmpfs refuses O_DIRECT
        return cls(fd)

    def note(self, at: int, record: bytes) -> None:
        """``record`` was written at ``at`` through the page cache: keep its block's bytes."""
        head = self._head(at)
        if head is None:
            self._end = -1
        else:
            self._keep(at - len(head), head + record)

    def write(self, at: int, record: bytes) -> bool:
        """Write ``record`` at ``at`` and sync it, in whole blocks (the file must already reach
        the end of its last one); False, having written nothing, where this writer cannot."""
        head = self._head(at)
        if self._fd is None or head is None or len(record) > _LARGEST:
            return False
        data = head + record
        length = -(-len(data) // BLOCK) * BLOCK
        if length > len(self._buffer):
            self._buffer.close()
            self._buffer = mmap.mmap(-1, length)
        self._buffer[: len(data)] = data
        self._buffer[len(data) : length] = _ZEROS[: length - len(data)]
        try:
            written = os.pwrite(self._fd, memoryview(self._buffer)[:length], at - len(head))
        except OSError as error:
            if error.errno != errno.EINVAL:
                raise
            self.close()  # the file system takes no direct write after all
            return False
        if written != length:
            raise OSError(errno.EIO, f"a direct write took {written} of {length} bytes")
        self._keep(at - len(head), data)
        return True

    def close(self) -> None:
        """Close the descriptor (the buffer goes with the writer)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _head(self, at: int) -> bytes | None:
        """The bytes of ``at``'s block before it, if known: none when ``at`` starts a block."""
        if at == self._end:
            return self._tail
        return b"" if at % BLOCK == 0 else None

    def _keep(self, start: int, data: bytes) -> None:
        """``data`` now lies from ``start`` (a block's start): keep its last block's bytes."""
        self._end = start + len(data)
        self._tail = data[len(data) - self._end % BLOCK :] if self._end % BLOCK else b""
