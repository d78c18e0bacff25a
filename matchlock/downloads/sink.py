"""A partial download on disk, hashed as it is written, without stalling the event loop.

The event loop only reads from the network. Each batch of received chunks (about 1 MiB) goes to a
worker thread that feeds it to sha256 and writes it to the ``.part`` file with one ``writev``;
both release the GIL. While the worker handles batch *n* the loop gathers batch *n + 1*, and it
waits for *n* before handing over *n + 1*, so at most two batches are in memory whatever the
piece's size, and hashing overlaps the network instead of adding to it.

A batch under :data:`INLINE_BYTES` (a small piece, the tail of a large one) is hashed and written
on the loop instead: that costs less than the hop to a thread and back.

(The event log writes with ``aiofiles``; here one worker call both hashes and writes, which is
half the thread hops of an ``aiofiles`` write plus a separate hashing hop.)

The file descriptor belongs to the caller, who opened it (and holds the content's lock through
it, see :meth:`matchlock.downloads.cache.Cache.locked`); a part left by an earlier run is resumed
by :meth:`PartFile.begin` with ``resume=True``, which hashes the bytes already there.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Sequence

from matchlock.downloads.cache import HeldContent

__all__ = ["BATCH_BYTES", "INLINE_BYTES", "PartFile"]

BATCH_BYTES = 1024 * 1024
"""How many received bytes are handed to the worker thread at a time."""

INLINE_BYTES = 256 * 1024
"""Batches up to this size are hashed and written on the event loop."""

_READ_CHUNK = 1024 * 1024


class PartFile:
    """The ``.part`` file of one content (held open, in append mode, by the content's lock),
    its running sha256 and its size so far."""

    def __init__(self, held: HeldContent) -> None:
        self.held = held
        self.path = held.path
        self._fd = held.fd
        self._sha256 = hashlib.sha256()
        self._pending: asyncio.Future[None] | None = None
        self.size = 0
        """Bytes accepted so far (written, or handed to the worker to be written)."""
        self.resumed_from = 0
        """How many bytes the download last resumed after (0: it ran from the start)."""
        self.begun = False
        """Whether :meth:`begin` was called at least once."""

    async def begin(self, *, resume: bool) -> int:
        """Start a download into the part. With ``resume``, keep the bytes already there (hashed
        from the file the first time, left as they are after an earlier :meth:`begin`);
        otherwise start empty. Returns the size the download continues from."""
        await self.drain()
        if resume and self.begun:
            return self.size  # the running hash already covers every byte in the file
        self.begun = True
        self._sha256 = hashlib.sha256()
        self.size = 0
        if os.fstat(self._fd).st_size > 0:
            if resume:
                self.size = await self.held.run(_hash_file, self._fd, self._sha256)
            else:
                # Only when there is something to drop: on ext4, a file truncated to zero and
                # written again is flushed to disk when closed (auto_da_alloc), a long stall.
                os.ftruncate(self._fd, 0)
        self.resumed_from = self.size
        return self.size

    async def write(self, chunks: Sequence[bytes]) -> None:
        """Hash and write ``chunks``; returns once the *previous* batch is on disk."""
        previous, self._pending = self._pending, None
        if previous is not None:
            await previous
        count = sum(len(chunk) for chunk in chunks)
        self.size += count
        if count <= INLINE_BYTES:
            _hash_and_write(self._fd, self._sha256, chunks)
            return
        self._pending = self.held.run(_hash_and_write, self._fd, self._sha256, chunks)

    async def drain(self) -> None:
        """Wait until every batch handed over is hashed and on disk."""
        pending, self._pending = self._pending, None
        if pending is not None:
            await pending

    async def restart(self) -> None:
        """Drop every byte so far and start again from zero."""
        await self.drain()
        if self.size or self.resumed_from or os.fstat(self._fd).st_size:
            os.ftruncate(self._fd, 0)
        self._sha256 = hashlib.sha256()
        self.size = self.resumed_from = 0

    def hexdigest(self) -> str:
        """The sha256 of the bytes so far (call after :meth:`drain`)."""
        return self._sha256.hexdigest()


def _hash_file(fd: int, sha256: hashlib._Hash) -> int:
    """Hash what the file already holds. Returns its size."""
    os.lseek(fd, 0, os.SEEK_SET)
    size = 0
    while chunk := os.read(fd, _READ_CHUNK):
        sha256.update(chunk)
        size += len(chunk)
    return size


def _hash_and_write(fd: int, sha256: hashlib._Hash, chunks: Sequence[bytes]) -> None:
    for chunk in chunks:
        sha256.update(chunk)
    views = [memoryview(chunk) for chunk in chunks]
    while views:
        written = os.writev(fd, views)
        # A regular file takes everything at once but for a full disk; loop on a short write.
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]
