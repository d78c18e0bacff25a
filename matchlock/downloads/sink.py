"""A partial download on disk, hashed as it is written, without stalling the event loop.

The event loop only reads from the network. Each batch of received chunks (about 1 MiB; in a
segmented download, one segment: :mod:`matchlock.downloads.resolvers.ranges`) goes to
two worker threads at once: one feeds it to sha256, the other writes it to the ``.part`` file
(:class:`~matchlock.downloads.direct.DirectWriter`: whole blocks with ``O_DIRECT``, around the
page cache, which on these machines costs less CPU than hashing); both release the GIL. While
they handle batch *n* the loop gathers batch *n + 1*, and it waits for both before handing over
*n + 1*, so at most two batches (and the writer's buffer) are in memory whatever the piece's
size, and hashing and writing overlap the network and each other instead of adding to it. The
sha256 still covers every byte, in order: it is the one the piece is accepted by.

A batch under :data:`INLINE_BYTES` (a small piece, the tail of a large one) is hashed and written
on the loop instead: that costs less than the hop to a thread and back.

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
from matchlock.downloads.direct import DirectWriter, write_all

__all__ = ["BATCH_BYTES", "INLINE_BYTES", "WRITE_BYTES", "PartFile"]

BATCH_BYTES = 1024 * 1024
"""How many received bytes are handed to the worker thread at a time."""

INLINE_BYTES = 256 * 1024
"""Batches up to this size are hashed and written on the event loop."""

WRITE_BYTES = 4 * 1024 * 1024
"""The writer's buffer, and so the most one ``O_DIRECT`` write carries: measured here, 512 MiB
went to disk 1.4 to 1.6 times as fast in 4 MiB writes as in 1 MiB ones (8 MiB: no faster)."""

_READ_CHUNK = 1024 * 1024


class PartFile:
    """The ``.part`` file of one content (held open, in append mode, by the content's lock),
    its running sha256 and its size so far."""

    def __init__(self, held: HeldContent) -> None:
        self.held = held
        self.path = held.path
        self._fd = held.fd
        self._sha256 = hashlib.sha256()
        self._pending: tuple[asyncio.Future[None], asyncio.Future[None]] | None = None
        self._writer = DirectWriter(held.path, held.fd, WRITE_BYTES)
        self.size = 0
        """Bytes accepted so far (written, or handed to the worker to be written)."""
        self.resumed_from = 0
        """How many bytes the download last resumed after (0: it ran from the start)."""
        self.begun = False
        """Whether :meth:`begin` was called at least once."""
        self.source: str | None = None
        """The resolvable whose download last began in the part (None before the first)."""

    async def begin(self, *, resume: bool, source: str) -> int:
        """Start a download from ``source`` into the part. With ``resume``, keep the bytes
        already there (hashed from the file the first time, left as they are after an earlier
        :meth:`begin`); otherwise start empty. Returns the size the download continues from."""
        await self.drain()
        self.source = source
        if resume and self.begun:
            return self.size  # the running hash already covers every byte in the file
        self.begun = True
        self._writer.discard()
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

    async def write(self, chunks: Sequence[bytes | memoryview]) -> None:
        """Hash and write ``chunks``; returns once the *previous* batch is hashed and written
        (until then, ``chunks`` must stay unchanged: the workers read them)."""
        await self._settle()
        count = sum(len(chunk) for chunk in chunks)
        self.size += count
        if count <= INLINE_BYTES:
            self._writer.flush()  # what waits for a whole block goes first
            _hash(self._sha256, chunks)
            write_all(self._fd, chunks)
            return
        # Two workers at once: hashing and writing each take about as long as receiving.
        self._pending = (
            self.held.run(_hash, self._sha256, chunks),
            self.held.run(self._writer.write, chunks),
        )

    async def drain(self) -> None:
        """Wait until every byte handed over is hashed and in the file."""
        await self._settle()
        self._writer.flush()

    async def _settle(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            await asyncio.wait(pending)
            errors = [error for work in pending if (error := work.exception()) is not None]
            if errors:  # a failed write (or hash) raises here; both were retrieved
                raise errors[0]

    async def restart(self) -> None:
        """Drop every byte so far and start again from zero."""
        await self._settle()
        self._writer.discard()
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


def _hash(sha256: hashlib._Hash, chunks: Sequence[bytes | memoryview]) -> None:
    for chunk in chunks:
        sha256.update(chunk)
