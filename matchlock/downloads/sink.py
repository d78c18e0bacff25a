"""A partial download on disk, hashed as it is written, without stalling the event loop.

The event loop only reads from the network. Each batch of received chunks (about 1 MiB; in a
segmented download, one segment: :mod:`matchlock.downloads.resolvers.ranges`) goes to two lanes
of worker-thread work: one feeds the batches to sha256, the other writes them to the ``.part``
file (:class:`~matchlock.downloads.direct.DirectWriter`: whole blocks with ``O_DIRECT``, around
the page cache, which on these machines costs less CPU than hashing); both release the GIL.
Each lane takes its batches strictly in order, one at a time, but the two lanes do not wait for
each other: the hash may be a batch ahead of a disk that stalls, or the writer a batch ahead of
a hash that lost its core, and neither waits for the slower of the two on every batch. At most
:data:`IN_HAND` batches are handed over and not yet both hashed and written:
:meth:`PartFile.write` waits for the oldest before it takes one more, so memory stays at a
few batches (and the writer's buffer) whatever the piece's size. The sha256 still covers every
byte, in order: it is the one the piece is accepted by. A lane that fails (a write refused by
a full disk) runs nothing after it: the file never gets a hole.

A batch under :data:`INLINE_BYTES` (a small piece, the tail of a large one) is hashed and written
on the loop instead, once both lanes are idle: that costs less than the hops to a thread and back.

The file descriptor belongs to the caller, who opened it (and holds the content's lock through
it, see :meth:`matchlock.downloads.cache.Cache.locked`, whose release waits for the lanes'
work); a part left by an earlier run is resumed by :meth:`PartFile.begin` with
``resume=True``, which hashes the bytes already there.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future

from matchlock.downloads.cache import HeldContent
from matchlock.downloads.direct import DirectWriter, write_all

__all__ = ["BATCH_BYTES", "INLINE_BYTES", "IN_HAND", "WRITE_BYTES", "PartFile"]

BATCH_BYTES = 1024 * 1024
"""How many received bytes are handed to the worker thread at a time."""

INLINE_BYTES = 256 * 1024
"""Batches up to this size are hashed and written on the event loop."""

IN_HAND = 2
"""How many batches the lanes may hold at once (handed over, not yet hashed and written): a
batch's chunks must stay unchanged until this many more :meth:`PartFile.write` calls returned,
or any other call of the part did. Two lets each lane run a batch ahead of the other."""

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
        self._hashing = _Lane(held)
        self._writing = _Lane(held)
        self._in_hand: deque[tuple[asyncio.Future[None], asyncio.Future[None]]] = deque()
        self._writer = DirectWriter(held.path, held.fd, WRITE_BYTES)
        self.size = 0
        """Bytes accepted so far (written, or handed to the lanes to be written)."""
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
        """Hash and write ``chunks``; returns once at most :data:`IN_HAND` batches, these
        included, are in the lanes' hands (until they are out of them, ``chunks`` must stay
        unchanged: see :data:`IN_HAND`). A failed write or hash of an earlier batch raises."""
        count = sum(len(chunk) for chunk in chunks)
        if count <= INLINE_BYTES:
            await self._settle(0)
            self.size += count
            self._writer.flush()  # what waits for a whole block goes first
            _hash(self._sha256, chunks)
            write_all(self._fd, chunks)
            return
        await self._settle(IN_HAND - 1)
        self.size += count
        hashed = self._hashing.run(_hash, self._sha256, chunks)
        written = self._writing.run(self._writer.write, chunks)
        self._in_hand.append((hashed, written))

    async def drain(self) -> None:
        """Wait until every byte handed over is hashed and in the file."""
        await self._settle(0)
        self._writer.flush()

    async def _settle(self, keep: int) -> None:
        """Wait until at most ``keep`` batches are in the lanes' hands. A batch that failed
        raises its error, once every batch after it is out of their hands as well (the lanes
        skip them): nothing runs on the part after this raised."""
        while len(self._in_hand) > keep:
            batch = self._in_hand.popleft()
            await asyncio.wait(batch)
            errors = [error for work in batch if (error := work.exception()) is not None]
            if errors:
                for later in self._in_hand:
                    await asyncio.wait(later)
                    for work in later:
                        work.exception()  # retrieved: a skipped batch, or the same failure
                self._in_hand.clear()
                self._hashing, self._writing = _Lane(self.held), _Lane(self.held)  # idle again
                self.begun = False  # size and hash may count bytes not in the file: a resume
                # hashes the file again
                raise next((e for e in errors if not isinstance(e, _Skipped)), errors[0])

    async def restart(self) -> None:
        """Drop every byte so far and start again from zero."""
        await self._settle(0)
        self._writer.discard()
        if self.size or self.resumed_from or os.fstat(self._fd).st_size:
            os.ftruncate(self._fd, 0)
        self._sha256 = hashlib.sha256()
        self.size = self.resumed_from = 0

    def hexdigest(self) -> str:
        """The sha256 of the bytes so far (call after :meth:`drain`)."""
        return self._sha256.hexdigest()


class _Skipped(Exception):
    """A lane's job that did not run: a job before it in the same lane failed."""


class _Lane:
    """Jobs on one part that must run one after another, in the order given (one running
    sha256, one file written front to back), on the content's executor: a single job drains
    the lane while it has work, so a lane holds at most one worker thread, and waits on none.
    Once a job failed, the lane's later jobs fail with :class:`_Skipped` without running."""

    def __init__(self, held: HeldContent) -> None:
        self._held = held
        self._lock = threading.Lock()
        self._queue: deque[tuple[Future[None], Callable[..., None], tuple[object, ...]]] = deque()
        self._draining = False
        self._failed = False

    def run(self, func: Callable[..., None], *args: object) -> asyncio.Future[None]:
        """Run ``func(*args)`` after every job given before it (call on the event loop)."""
        done: Future[None] = Future()
        with self._lock:
            self._queue.append((done, func, args))
            start, self._draining = not self._draining, True
        if start:  # through the content's lock, whose release waits for it
            try:
                self._held.submit(self._drain)
            except RuntimeError as error:  # the executor is shut down: nothing will drain
                self._refuse(error)
        return asyncio.wrap_future(done)

    def _refuse(self, error: RuntimeError) -> None:
        """Fail every job waiting in the lane with ``error`` (no thread will run them): their
        awaiters raise it instead of waiting forever, and the lane runs nothing more."""
        with self._lock:
            waiting, self._queue = list(self._queue), deque()
            self._draining = False
            self._failed = True
        for done, _func, _args in waiting:
            if done.set_running_or_notify_cancel():
                done.set_exception(error)

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    self._draining = False
                    return
                done, func, args = self._queue.popleft()
            if not done.set_running_or_notify_cancel() or self._failed:
                self._failed = True  # a cancelled job is a hole too: nothing after it runs
                if not done.cancelled():
                    done.set_exception(_Skipped("an earlier batch failed"))
                continue
            try:
                func(*args)
            except BaseException as error:  # handed to the loop, which raises it
                self._failed = True
                done.set_exception(error)
            else:
                done.set_result(None)


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
