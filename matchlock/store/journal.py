"""One write-ahead journal for every log of a file repository: the logs a room host wrote in one
turn of the event loop are made durable by one ``fdatasync``, not one ``fsync`` each.

A room host appends to many room logs at once, and every batch waits for the disk before its
frames leave (``durability="every"``). An ``fsync`` per room log is a commit of the file
system's own journal per room: on the development machine about 100 us of CPU and 0.25 ms
each, so under load the host spent a quarter of its time in them, one room after another. With
``FileRepository(directory, sync="journal")`` (a :class:`~matchlock.app.hosting.RoomHost`'s),
every append is written to its log file at once, as always, and also queued here; at the end of
the turn the queued appends of every log become one record of ``<directory>/.journal``, written
with one write and, when one of them was durable, one ``fdatasync`` (so a power loss can take
no line before a durable one, of any log), or, where the file system allows it, one direct
write that syncs itself (:mod:`matchlock.store.direct`). The log files themselves are synced
only at checkpoints.

The file has two **halves**, each holding ``capacity - 4096`` bytes of records, after a first
block that holds both halves' headers (their epochs); each record carries its half's epoch and
a CRC32 (the layout, and the recovery, are in :mod:`matchlock.store.journal_file`). The file is
grown with zeros a MiB at a time (and fsynced then), so a record's ``fdatasync`` changes no
metadata.

When the next record would not fit in its half, the journal **switches**: it writes the other
half's header with the next epoch (after which that half's older records are dead), synced
with the records of the full half, and goes on there at once, while a thread **checkpoints**
the full half: it fsyncs every log written in it, and their folder. So a host with thousands
of rooms does not stop while their logs are synced, one after another. A half is only started
over once its checkpoint is over (the switch waits for it, which only a disk slower than the
records fill a half makes it do). A **full checkpoint**, in the loop's thread, syncs every log
either half holds and starts both halves over: when the repository is first used (after the
recovery), when its last open log closes (a clean stop leaves the journal empty), and before a
log is truncated or removed (so that no record puts back what is cut).

**Recovery**, when the repository is first used: the records of each half whose header is
whole, the older epoch first, each half in order up to the first record that is torn (its CRC
fails: the crash came while it was written, before anyone heard of it), are applied: their
bytes are written to their logs at their offsets (which the logs already hold, unless a power
loss took them, or a checkpoint synced them: writing them again changes nothing), and a log is
made anew when its bytes start at offset 0 (its name may not have reached the disk). A log
that no longer exists and whose bytes start further on was removed, and is left so; a log
shorter than an entry's offset lost lines the journal never held, which
:class:`~matchlock.core.errors.LogError` names. A header that is not whole can only be one
being written when the host stopped, over a half whose checkpoint was over: its records are
not needed, and the file is wiped once the other half's are applied. Then a full checkpoint.
A journal of the previous layout (``MLJ1``: one header, records to the end of the file) is
recovered the same way, as one half.

Records and full checkpoints run in the event loop's thread (a record's frames wait for it
anyway); only a switch's checkpoint runs in a thread of its own. This module moves bytes; it
never parses or checks a log's line (that is :mod:`matchlock.core.chain`).
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

from matchlock.store.direct import BLOCK, DirectWriter
from matchlock.store.journal_file import (
    BINARY,
    GROWTH,
    NAME,
    SECOND_HEADER,
    START,
    datasync,
    entry,
    fsync_directory,
    header,
    record,
    recover,
    sync_logs,
    write_at,
)

__all__ = ["CAPACITY", "MIN_CAPACITY", "NAME", "Journal", "fsync_directory"]

CAPACITY = 16 << 20
"""Bytes of one half of the journal, its header block included: what it holds before the
journal switches to the other half (see the module docs)."""

MIN_CAPACITY = 4096 + 1024
"""The smallest half: its header block and 1 KiB of records (a record larger than a half is
synced by a full checkpoint instead)."""


class Journal:
    """The journal of the logs in ``directory`` (see the module docs)."""

    def __init__(self, directory: Path, capacity: int = CAPACITY) -> None:
        self.directory = directory
        self.path = directory / NAME
        self.capacity = capacity
        """Bytes of a half, header block included; read at each full checkpoint."""
        self._fd: int | None = None
        self._direct: DirectWriter | None = None  # synced records bypass the page cache
        self._half = capacity - START  # bytes of records a half holds, as its header says
        self._active = 0  # the half records go to
        self._epochs = [0, 0]
        self._ends = [START, START]  # where each half's records end
        self.synced = START
        """Where the synced records of the half being written end: those after it may not
        survive a power loss (every record of the other half is synced)."""
        self._made = 0  # bytes of the file made so far (zeros, then records)
        self._written: tuple[set[str], set[str]] = (set(), set())  # logs each half holds
        self._checkpointing: _Checkpoint | None = None  # of the half not written
        self._entries: list[bytes] = []
        self._names: set[str] = set()  # the logs this turn's entries are of
        self._waiters: list[asyncio.Future[None]] = []
        self._scheduled = False
        self._users = 0
        self._broken: OSError | None = None

    @property
    def epoch(self) -> int:
        """The epoch of the half being written: it grows at each switch and checkpoint."""
        return self._epochs[self._active]

    def open(self, create: bool = True) -> bool:
        """Open the journal, recovering what a crash left in it, unless it is open already
        (or, unless ``create``, it does not exist: a host that never wrote a log made none);
        whether it is open."""
        if self._fd is not None:
            return True
        exists = self.path.exists()
        if not (exists or create):
            return False
        self.directory.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | BINARY, 0o666)
        self._made = os.fstat(self._fd).st_size
        if exists:
            self._recover()
        self.checkpoint()
        self._direct = DirectWriter.open(self.path)
        return True

    def settle(self) -> None:
        """Make a full checkpoint if there is a journal: before a log is truncated or removed,
        so that no record puts back what is cut."""
        if self.open(create=False):
            self.checkpoint()

    def acquire(self) -> None:
        """A log of the repository opened its file: keep the journal open for it."""
        self.open()
        self._users += 1

    def release(self) -> None:
        """A log closed its file; the last one closing makes a full checkpoint and closes the
        journal (a host stopping cleanly leaves its logs synced and its journal empty)."""
        self._users -= 1
        if self._users == 0 and self._fd is not None:
            self._commit()
            self.checkpoint()
            if self._direct is not None:
                self._direct.close()
                self._direct = None
            os.close(self._fd)
            self._fd = None

    def add(
        self, name: str, offset: int, data: bytes, durable: bool, *, later: bool = True
    ) -> asyncio.Future[None] | None:
        """Queue "the log file ``name`` holds ``data`` from byte ``offset``" for this turn's
        record (written at the end of the turn, unless not ``later``: then by the caller's
        :meth:`commit_now`); when ``durable``, a future that ends once the record is synced."""
        if self._broken is not None:
            raise OSError(
                self._broken.errno, f"{self.path}: an earlier write failed: {self._broken}"
            )
        self._entries.append(entry(name, offset, data))
        self._names.add(name)
        loop = asyncio.get_running_loop()
        if later and not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._commit)
        if not durable:
            return None
        synced = loop.create_future()
        self._waiters.append(synced)
        return synced

    def commit_now(self) -> None:
        """Write and sync the record of what was queued so far now, instead of at the end of
        the turn (a room host's batch, once every log of it was written)."""
        if self._entries:
            self._commit()

    def _commit(self) -> None:
        """Write this turn's entries as one record (synced when one was durable), then tell
        every durable append that waits."""
        self._scheduled = False
        entries, self._entries = self._entries, []
        names, self._names = self._names, set()
        waiters, self._waiters = self._waiters, []
        if not entries:
            return
        try:
            self._write(b"".join(entries), names, sync=bool(waiters))
        except OSError as error:
            self._broken = error
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(error)
            return
        for waiter in waiters:
            if not waiter.done():  # its append may have been cancelled
                waiter.set_result(None)

    def _write(self, payload: bytes, names: set[str], sync: bool) -> None:
        fd = self._fd
        assert fd is not None, "a log writes through its journal only while it holds it open"
        half = self._active
        written = record(self._epochs[half], payload)
        if len(written) > self._half:  # no half holds it: a full checkpoint syncs its logs
            self._written[half].update(names)
            self.checkpoint()
            return
        if self._ends[half] + len(written) > self._limit(half):
            self._switch()
            half = self._active
            written = record(self._epochs[half], payload)
        self._written[half].update(names)
        at = self._ends[half]
        self._grow(-(-(at + len(written)) // BLOCK) * BLOCK)  # a direct write ends on a block
        if not (sync and self._write_direct(at, written)):
            write_at(fd, written, at)
            if self._direct is not None:
                self._direct.note(at, written)
            if sync:
                datasync(fd)
        self._ends[half] = at + len(written)
        if sync:
            self.synced = self._ends[half]

    def _write_direct(self, at: int, written: bytes) -> bool:
        """Write the record ``written`` synced and bypassing the page cache, when that can be
        done: the halves lie on whole blocks (one's last block is never another's), and every
        record before ``at``'s block is synced (a direct write syncs only its own blocks)."""
        direct = self._direct
        if direct is None or self._half % BLOCK or self.synced < at - at % BLOCK:
            return False
        return direct.write(at, written)

    def _switch(self) -> None:
        """Go on in the other half under the next epoch, and checkpoint the full one in a
        thread (see the module docs)."""
        full, other = self._active, 1 - self._active
        self._finish_checkpoint()  # the other half's logs are synced: its records are dead
        self._written[other].clear()
        self._epochs[other] = max(self._epochs) + 1
        self._write_headers()  # its sync also syncs every record of the full half
        self._active = other
        self._ends[other] = self.synced = self._start(other)
        self._checkpointing = _Checkpoint(self.directory, sorted(self._written[full]))

    def _finish_checkpoint(self) -> None:
        """Wait for the checkpoint running in its thread, if any; raise what it met."""
        checkpointing, self._checkpointing = self._checkpointing, None
        if checkpointing is not None:
            checkpointing.join()
            if checkpointing.error is not None:
                raise checkpointing.error

    def checkpoint(self) -> None:
        """A full checkpoint: fsync every log either half holds and their folder, then start
        both halves over under the next epochs (the size of a half read from ``capacity``)."""
        assert self._fd is not None
        self._finish_checkpoint()
        sync_logs(self.directory, sorted(self._written[0] | self._written[1]))
        for written in self._written:
            written.clear()
        self._half = self.capacity - START
        newest = max(self._epochs)
        self._epochs = [newest + 2, newest + 1]  # half 0 is written, and is the newer
        self._grow(START)
        self._write_headers()
        self._active = 0
        self._ends = [self._start(0), self._start(1)]
        self.synced = self._start(0)

    def _start(self, half: int) -> int:
        return START + half * self._half

    def _limit(self, half: int) -> int:
        return self._start(half) + self._half

    def _write_headers(self) -> None:
        """Write both halves' headers (one block, one write) and sync the journal."""
        fd = self._fd
        assert fd is not None
        first, second = (header(epoch, self._half) for epoch in self._epochs)
        block = first + bytes(SECOND_HEADER - len(first)) + second
        write_at(fd, block, 0)
        datasync(fd)

    def _recover(self) -> None:
        """Apply the records a crash left to their logs (:func:`~matchlock.store.journal_file.
        recover`), so that the full checkpoint after syncs them."""
        assert self._fd is not None
        newest, written = recover(self._fd, self.directory, self.path)
        self._epochs = [newest, newest]  # the full checkpoint after goes on from the newest
        self._written[0].update(written)

    def _grow(self, size: int) -> None:
        """Make the file at least ``size`` bytes long with zeros, a MiB at a time, and fsync
        it then, so that writing a record in it changes no metadata."""
        fd = self._fd
        assert fd is not None
        if self._made >= size:
            return
        while self._made < size:
            write_at(fd, bytes(GROWTH), self._made)
            self._made += GROWTH
        os.fsync(fd)


class _Checkpoint(threading.Thread):
    """The checkpoint of a full half, in a thread of its own: fsync its logs and their folder
    (a descriptor of its own for each; the loop goes on writing them meanwhile)."""

    def __init__(self, directory: Path, names: list[str]) -> None:
        super().__init__(name="matchlock-journal-checkpoint", daemon=True)
        self.directory, self.names = directory, names
        self.error: OSError | None = None
        self.start()

    def run(self) -> None:
        try:
            sync_logs(self.directory, self.names)
        except OSError as error:
            self.error = error
