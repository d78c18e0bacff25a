"""Writing a large download to its ``.part`` file: around the page cache (``O_DIRECT``), or
into it, whichever has lately been the faster.

Measured on these machines, a buffered write of 1 GiB into a new file costs 0.2 to 2.5 s of
CPU (the kernel allocating and filling page-cache pages, reclaiming others under load): the
largest and the least steady cost of a large download, more than its sha256 (0.6 s). Written
with ``O_DIRECT``, through one page-aligned buffer, the same gigabyte costs 0.13 to 0.17 s,
the copy into the buffer included, but each write waits for the device: on these virtual disks
8 MiB took 5 to 15 ms (550 to 1,500 MB/s, from one minute to the next), where the page cache
took 2 ms or 12 (4,000 or 700 MB/s: pages the kernel had just freed are cheap to take again,
new ones are not). Neither is the faster for long, so :class:`DirectWriter` times every batch
of 1 MiB or more and :class:`WritePace` sends each batch the way that has been the faster per
byte lately, trying the other way every eighth batch (``O_DIRECT`` first: it is the cheaper in
CPU, and the writer runs on its own lane, so a write only costs time when it is slower than the
network and the hash). Whatever the ways, the file receives every byte once, in order.

Around the page cache, :class:`DirectWriter` copies each batch into its buffer and writes every
whole 4 KiB block of it with ``pwrite`` on a descriptor opened with ``O_DIRECT`` for that batch;
the bytes of an unfinished block wait in the buffer for the next batch, and go first, through
the part's own (buffered, append mode) descriptor, when the next batch goes into the page
cache or the download stops (:meth:`DirectWriter.flush`). A file that does not end on a block
boundary (a resumed part, or one written into the page cache last) is brought to one with a
buffered write first. Into the page cache, a batch is written through that same descriptor;
the kernel writes it to the disk later, as it does for any program's writes.

Where ``O_DIRECT`` does not exist or is refused (tmpfs, some network file systems), every byte
goes through the buffered descriptor instead, with the same result in the file. Only the
worker thread that holds the part's batch calls :meth:`~DirectWriter.write`, one batch at a
time; this module never hashes and never decides what is written, only how.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

__all__ = ["BLOCK", "DirectWriter", "Way", "WritePace", "write_all"]

Way = Literal["direct", "cache"]
"""How a batch goes to the file: around the page cache (``O_DIRECT``) or into it."""

BLOCK = 4096
"""The alignment of offsets, lengths and memory for ``O_DIRECT`` (a multiple of every logical
block size in use)."""


class WritePace:
    """Which way each batch goes: the one whose recent writes took the less time per byte, the
    other one every :attr:`EXPLORE` batches, so that a way that got faster is noticed. A way's
    pace is the mean of its last measurement and its pace before, or that measurement alone
    when the pace before is older than :attr:`EXPLORE` batches (the way was not in use)."""

    EXPLORE = 8
    MEASURED_BYTES = 1024 * 1024
    """Smaller writes are not timed: their cost is mostly the call's, not the bytes'."""

    def __init__(self) -> None:
        self._paces: dict[Way, tuple[float, int]] = {}  # seconds per byte, as of which batch
        self._batches = 0

    def choose(self) -> Way:
        """The way of the next batch."""
        self._batches += 1
        if "direct" not in self._paces:
            return "direct"
        if "cache" not in self._paces:
            return "cache"
        faster: Way = "direct" if self._paces["direct"][0] <= self._paces["cache"][0] else "cache"
        if self._batches % self.EXPLORE:
            return faster
        return "cache" if faster == "direct" else "direct"

    def took(self, way: Way, count: int, seconds: float) -> None:
        """A batch of ``count`` bytes went ``way`` in ``seconds``."""
        if count < self.MEASURED_BYTES:
            return
        pace = seconds / count
        before = self._paces.get(way)
        if before is not None and self._batches - before[1] < self.EXPLORE:
            pace = (before[0] + pace) / 2
        self._paces[way] = (pace, self._batches)


class DirectWriter:
    """Appends batches to the part at ``path`` (open as ``fd``, in append mode), each the way
    ``pace`` (a new :class:`WritePace` by default) chooses, in whole blocks with ``O_DIRECT``
    where it can; ``capacity`` bytes of buffer (a multiple of :data:`BLOCK`)."""

    def __init__(self, path: Path, fd: int, capacity: int, pace: WritePace | None = None) -> None:
        self._pace = pace or WritePace()
        self._path = path
        self._fd = fd
        self._capacity = capacity
        self._buffer: mmap.mmap | None = None
        self._held = 0  # bytes at the buffer's start, not yet in the file
        self._offset = 0  # where the buffer's first byte goes in the file
        self._direct = hasattr(os, "O_DIRECT")

    def write(self, chunks: Sequence[bytes | memoryview]) -> None:
        """Append ``chunks`` (blocking; one call at a time)."""
        if not self._direct:
            write_all(self._fd, chunks)
            return
        way = self._pace.choose()
        started = time.perf_counter()
        if way == "cache":
            self._write_held()
            write_all(self._fd, chunks)
        else:
            self._write_direct(chunks)
        count = sum(len(chunk) for chunk in chunks)
        self._pace.took(way, count, time.perf_counter() - started)

    def _write_direct(self, chunks: Sequence[bytes | memoryview]) -> None:
        views = [memoryview(chunk) for chunk in chunks]
        if self._held == 0:
            self._offset = os.fstat(self._fd).st_size
            lead = -self._offset % BLOCK
            if lead:
                views = self._write_lead(views, lead)
        try:
            direct = os.open(self._path, os.O_WRONLY | os.O_DIRECT)
        except OSError:  # refused by this file system (EINVAL): buffered from now on
            self._direct = False
            self.flush()
            write_all(self._fd, views)
            return
        try:
            for view in views:
                self._take(direct, view)
            self._write_blocks(direct, self._held - self._held % BLOCK)
        finally:
            os.close(direct)

    def flush(self) -> None:
        """Write what waits in the buffer, so that the file holds every byte given."""
        self._write_held()
        self.discard()

    def _write_held(self) -> None:
        """Write the bytes waiting in the buffer through the part's descriptor."""
        if self._held and self._buffer is not None:
            write_all(self._fd, [memoryview(self._buffer)[: self._held]])
        self._held = 0

    def discard(self) -> None:
        """Forget what waits in the buffer, and free the buffer (the part is being dropped)."""
        self._held = 0
        buffer, self._buffer = self._buffer, None
        if buffer is not None:
            with contextlib.suppress(BufferError):  # a failed write's traceback holds a view
                buffer.close()  # then it is freed with the traceback

    def _write_lead(self, views: list[memoryview], lead: int) -> list[memoryview]:
        """Write the first ``lead`` bytes buffered (up to a block boundary); the rest."""
        head: list[memoryview] = []
        while views and lead:
            view = views.pop(0)
            head.append(view[:lead])
            if len(view) > lead:
                views.insert(0, view[lead:])
            lead -= len(head[-1])
        write_all(self._fd, head)
        self._offset += sum(len(view) for view in head)
        return views

    def _take(self, direct: int, view: memoryview) -> None:
        if self._buffer is None:
            self._buffer = mmap.mmap(-1, self._capacity)  # page-aligned, as O_DIRECT needs
        while view:
            count = min(len(view), self._capacity - self._held)
            self._buffer[self._held : self._held + count] = view[:count]
            self._held += count
            view = view[count:]
            if self._held == self._capacity:
                self._write_blocks(direct, self._held)

    def _write_blocks(self, direct: int, count: int) -> None:
        """Write the buffer's first ``count`` bytes (whole blocks) and keep the rest."""
        if count == 0 or self._buffer is None:
            return
        done = 0
        with memoryview(self._buffer) as view:
            while done < count:
                done += os.pwrite(direct, view[done:count], self._offset + done)
        self._offset += count
        self._held -= count
        self._buffer.move(0, count, self._held)


def write_all(fd: int, chunks: Sequence[bytes | memoryview]) -> None:
    """Append ``chunks`` through ``fd`` with as few ``writev`` calls as the file takes."""
    views = [memoryview(chunk) for chunk in chunks]
    while views:
        written = os.writev(fd, views)
        # A regular file takes everything at once but for a full disk; loop on a short write.
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]
