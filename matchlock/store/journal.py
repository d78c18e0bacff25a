"""One write-ahead journal for every log of a file repository: the logs a room host wrote in one
turn of the event loop are made durable by one ``fdatasync``, not one ``fsync`` each.

A room host appends to many room logs at once, and every batch waits for the disk before its
frames leave (``durability="every"``). An ``fsync`` per room log is a commit of the file
system's own journal per room: on the development machine about 100 us of CPU and 0.25 ms
each, so under load the host spent a quarter of its time in them, one room after another. With
``FileRepository(directory, sync="journal")`` (a :class:`~matchlock.app.hosting.RoomHost`'s),
every append is written to its log file at once, as always, and also queued here; at the end of
the turn the queued appends of every log become one record of ``<directory>/.journal``, written
with one ``pwrite`` and, when one of them was durable, one ``fdatasync`` (so a power loss can
take no line before a durable one, of any log). The log files themselves are synced only at a
checkpoint.

The file: a header (``MLJ1``, the epoch, a CRC32 of both) in its first bytes; records from byte
4096, each ``<payload length: u32><epoch: u64><CRC32 of the epoch and payload: u32>`` and its
payload, a sequence of entries ``<id length: u16><offset: u64><length: u32><id><bytes>``, each
saying "log ``<id>`` holds ``<bytes>`` from byte ``<offset>``". The file is grown with zeros a
MiB at a time (and fsynced then), so a record's ``fdatasync`` changes no metadata. When the next
record would pass ``capacity``, a **checkpoint** fsyncs every log written since the last one
and its folder, then writes the header with the next epoch: the records of an older epoch are
dead, and the next one starts again at byte 4096. A checkpoint is also made when the last open
log of the repository closes, and before a log is truncated or removed.

**Recovery**, when the repository is first used: every record of the header's epoch, in order,
up to the first one that is torn (its CRC fails: the crash came while it was written, before
anyone heard of it), is applied: its bytes are written to its log at its offset (which the log
already holds, unless a power loss took them), and a log is made anew when its bytes start at
offset 0 (its name may not have reached the disk). Then a checkpoint. A log that no longer
exists and whose bytes start further on was removed, and is left so; a log shorter than an
entry's offset lost lines the journal never held, which :class:`~matchlock.core.errors.LogError`
names.

Everything runs in the event loop's thread (a record's frames wait for it anyway). This module
moves bytes; it never parses or checks a log's line (that is :mod:`matchlock.core.chain`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import zlib
from pathlib import Path

from matchlock.core.errors import LogError

__all__ = ["CAPACITY", "NAME", "Journal", "fsync_directory"]

NAME = ".journal"
"""The journal's file name in the repository's folder (not a ``*.log``: never listed as a log)."""

CAPACITY = 16 << 20
"""Bytes of records the journal holds before a checkpoint starts it over."""

_MAGIC = b"MLJ1"
_HEADER = struct.Struct("<4sQI")  # magic, epoch, CRC32 of magic and epoch
_RECORD = struct.Struct("<IQI")  # payload length, epoch, CRC32 of epoch and payload
_ENTRY = struct.Struct("<HQI")  # id length, offset in the log, length of the bytes
_EPOCH = struct.Struct("<Q")
_START = 4096
_GROWTH = 1 << 20
_BINARY = getattr(os, "O_BINARY", 0)  # Windows: no newline translation

logger = logging.getLogger(__name__)


class Journal:
    """The journal of the logs in ``directory`` (see the module docs)."""

    def __init__(self, directory: Path, capacity: int = CAPACITY) -> None:
        self.directory = directory
        self.path = directory / NAME
        self.capacity = capacity
        self.epoch = 0
        self._fd: int | None = None
        self._end = _START  # where the next record goes
        self.synced = _START
        """Where the synced records end: those after it may not survive a power loss."""
        self._made = 0  # bytes of the file made so far (zeros, then records)
        self._written: set[str] = set()  # logs written since the last checkpoint
        self._entries: list[bytes] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._scheduled = False
        self._users = 0
        self._broken: OSError | None = None

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
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | _BINARY, 0o666)
        self._made = os.fstat(self._fd).st_size
        if exists:
            self._recover()
        self.checkpoint()
        return True

    def settle(self) -> None:
        """Make a checkpoint if there is a journal: before a log is truncated or removed,
        so that no record puts back what is cut."""
        if self.open(create=False):
            self.checkpoint()

    def acquire(self) -> None:
        """A log of the repository opened its file: keep the journal open for it."""
        self.open()
        self._users += 1

    def release(self) -> None:
        """A log closed its file; the last one closing makes a checkpoint and closes the journal
        (a host stopping cleanly leaves its logs synced and its journal empty)."""
        self._users -= 1
        if self._users == 0 and self._fd is not None:
            self._commit()
            self.checkpoint()
            os.close(self._fd)
            self._fd = None

    def add(
        self, name: str, offset: int, data: bytes, durable: bool
    ) -> asyncio.Future[None] | None:
        """Queue "the log file ``name`` holds ``data`` from byte ``offset``" for this turn's
        record; when ``durable``, a future that ends once the record is synced."""
        if self._broken is not None:
            raise OSError(
                self._broken.errno, f"{self.path}: an earlier write failed: {self._broken}"
            )
        encoded = name.encode()
        self._entries.append(_ENTRY.pack(len(encoded), offset, len(data)) + encoded + data)
        self._written.add(name)
        loop = asyncio.get_running_loop()
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._commit)
        if not durable:
            return None
        synced = loop.create_future()
        self._waiters.append(synced)
        return synced

    def _commit(self) -> None:
        """Write this turn's entries as one record (synced when one was durable), then tell
        every durable append that waits."""
        self._scheduled = False
        entries, self._entries = self._entries, []
        waiters, self._waiters = self._waiters, []
        if not entries:
            return
        try:
            self._write(b"".join(entries), sync=bool(waiters))
        except OSError as error:
            self._broken = error
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(error)
            return
        for waiter in waiters:
            if not waiter.done():  # its append may have been cancelled
                waiter.set_result(None)

    def _write(self, payload: bytes, sync: bool) -> None:
        fd = self._fd
        assert fd is not None, "a log writes through its journal only while it holds it open"
        size = _RECORD.size + len(payload)
        if self._end + size > self.capacity:
            self.checkpoint()  # syncs every log written, this record's bytes among them
            if _START + size > self.capacity:
                return
        record = _RECORD.pack(len(payload), self.epoch, _crc(self.epoch, payload)) + payload
        self._grow(self._end + size)
        _write_at(fd, record, self._end)
        self._end += size
        if sync:
            _datasync(fd)
            self.synced = self._end

    def _grow(self, size: int) -> None:
        """Make the file at least ``size`` bytes long with zeros, a MiB at a time, and fsync
        it then, so that writing a record in it changes no metadata."""
        fd = self._fd
        assert fd is not None
        if self._made >= size:
            return
        while self._made < size:
            _write_at(fd, bytes(_GROWTH), self._made)
            self._made += _GROWTH
        os.fsync(fd)

    def checkpoint(self) -> None:
        """fsync every log written since the last checkpoint and their folder, then start the
        journal over under the next epoch."""
        fd = self._fd
        assert fd is not None
        for name in sorted(self._written):
            _fsync_file(self.directory / name)
        fsync_directory(self.directory)
        self._written.clear()
        self.epoch += 1
        self._grow(_START)
        magic_epoch = _MAGIC + _EPOCH.pack(self.epoch)
        _write_at(fd, _HEADER.pack(_MAGIC, self.epoch, zlib.crc32(magic_epoch)), 0)
        _datasync(fd)
        self._end = self.synced = _START

    def _recover(self) -> None:
        """Apply every whole record of the current epoch to its logs (see the module docs)."""
        fd = self._fd
        assert fd is not None
        os.lseek(fd, 0, os.SEEK_SET)
        data = b"".join(iter(lambda: os.read(fd, _GROWTH), b""))
        if len(data) < _HEADER.size:
            return  # a journal whose header never reached the disk holds no record
        magic, epoch, crc = _HEADER.unpack_from(data)
        if magic != _MAGIC or crc != zlib.crc32(_MAGIC + _EPOCH.pack(epoch)):
            # Only a checkpoint writes the header, once every log is synced: no record is
            # needed. Its old records are wiped, so that none is ever read under a new epoch.
            logger.warning("%s: its header was torn by a crash: no record to apply", self.path)
            _write_at(fd, bytes(len(data)), 0)
            os.fsync(fd)
            return
        self.epoch, position, records = epoch, _START, 0
        while position + _RECORD.size <= len(data):
            length, record_epoch, crc = _RECORD.unpack_from(data, position)
            payload = data[position + _RECORD.size : position + _RECORD.size + length]
            if not length or record_epoch != epoch or len(payload) < length:
                break
            if crc != _crc(epoch, payload):
                logger.warning(
                    "%s: a record torn by a crash at byte %d: dropped", self.path, position
                )
                break
            self._apply(payload)
            position += _RECORD.size + length
            records += 1
        if records:
            logger.warning(  # a clean stop leaves none: the last log's close checkpoints
                "%s: %d records applied to their logs (the host stopped without closing them: "
                "a crash?)",
                self.path,
                records,
            )

    def _apply(self, payload: bytes) -> None:
        position = 0
        while position < len(payload):
            name_length, offset, length = _ENTRY.unpack_from(payload, position)
            position += _ENTRY.size
            name = payload[position : position + name_length].decode()
            position += name_length
            data = payload[position : position + length]
            position += length
            self._apply_entry(name, offset, data)

    def _apply_entry(self, name: str, offset: int, data: bytes) -> None:
        path = self.directory / name
        if path.name != name or name in (".", "..", NAME):
            raise LogError(f"{self.path}: a record names {name!r}, which is not a log's file")
        if offset and not path.exists():
            logger.warning("%s: %s was removed: its bytes in the journal are left", self.path, path)
            return
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | _BINARY, 0o666)
        try:
            size = os.fstat(fd).st_size
            if size < offset:
                raise LogError(
                    f"{path}: the journal {self.path} holds its bytes from byte {offset}, but the "
                    f"file holds only {size}: the lines between were lost"
                )
            _write_at(fd, data, offset)
        finally:
            os.close(fd)
        self._written.add(name)


def _write_at(fd: int, data: bytes, offset: int) -> None:
    """Write all of ``data`` at ``offset`` (a seek and writes: ``os.pwrite`` is not everywhere;
    the journal is used from one thread)."""
    os.lseek(fd, offset, os.SEEK_SET)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _datasync(fd: int) -> None:
    """fdatasync ``fd``, or fsync it where there is no fdatasync (Windows, macOS)."""
    if hasattr(os, "fdatasync"):
        os.fdatasync(fd)
    else:
        os.fsync(fd)


def _crc(epoch: int, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(_EPOCH.pack(epoch)))


def _fsync_file(path: Path) -> None:
    """fsync the file or folder at ``path`` through a descriptor of its own (any descriptor of
    a file syncs it); a log removed meanwhile needs none."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
