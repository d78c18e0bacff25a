"""The journal's file (:mod:`matchlock.store.journal`): its layout, and its recovery after a crash.

The layout: a first block holding both halves' headers (``MLJ2``, the half's epoch, the size
of a half, a CRC32 of the three; half 0's at byte 0, half 1's at byte 512, in another sector),
then the halves' records, each ``<payload length: u32><epoch: u64><CRC32 of the epoch and
payload: u32>`` and its payload, a sequence of entries ``<id length: u16><offset: u64><length:
u32><id><bytes>``, each saying "log ``<id>`` holds ``<bytes>`` from byte ``<offset>``". A
journal of the previous layout (``MLJ1``: one header, records to the end of the file) reads as
one half.

:func:`recover` applies the records of each half whose header is whole, the older epoch first,
each half up to its first torn record, to their logs (see the journal's module docs for why
that is always safe, and what it cannot give back). This module moves bytes and reports what it
found; it never parses or checks a log's line.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from pathlib import Path

from matchlock.core.errors import LogError

__all__ = [
    "BINARY",
    "GROWTH",
    "NAME",
    "RECORD",
    "SECOND_HEADER",
    "START",
    "datasync",
    "entry",
    "fsync_directory",
    "header",
    "record",
    "recover",
    "sync_logs",
    "write_at",
]

NAME = ".journal"
"""The journal's file name in the repository's folder (not a ``*.log``: never listed as a log)."""

START = 4096
"""The first block, which holds the headers; a half's records start on a block."""

SECOND_HEADER = 512
"""Where half 1's header is: in another sector than half 0's, so writing one keeps the other."""

GROWTH = 1 << 20
"""The file grows with zeros a MiB at a time."""

BINARY = getattr(os, "O_BINARY", 0)
"""Windows: no newline translation."""

RECORD = struct.Struct("<IQI")
"""A record's head: payload length, epoch, CRC32 of epoch and payload."""

_MAGIC = b"MLJ2"
_HEADER = struct.Struct("<4sQQI")  # magic, epoch, bytes of records a half holds, CRC32 of the rest
_OLD_MAGIC = b"MLJ1"
_OLD_HEADER = struct.Struct("<4sQI")  # magic, epoch, CRC32 of magic and epoch
_ENTRY = struct.Struct("<HQI")  # id length, offset in the log, length of the bytes
_EPOCH = struct.Struct("<Q")

logger = logging.getLogger("matchlock.store.journal")


def header(epoch: int, half: int) -> bytes:
    """A half's header: its epoch and the bytes of records each half holds."""
    crc = zlib.crc32(_MAGIC + _EPOCH.pack(epoch) + _EPOCH.pack(half))
    return _HEADER.pack(_MAGIC, epoch, half, crc)


def entry(name: str, offset: int, data: bytes) -> bytes:
    """The entry "log ``name`` holds ``data`` from byte ``offset``"."""
    encoded = name.encode()
    return _ENTRY.pack(len(encoded), offset, len(data)) + encoded + data


def record(epoch: int, payload: bytes) -> bytes:
    """A record of ``payload`` (its entries) under ``epoch``."""
    return RECORD.pack(len(payload), epoch, _crc(epoch, payload)) + payload


def recover(fd: int, directory: Path, path: Path) -> tuple[int, set[str]]:
    """Apply the journal ``fd`` (at ``path``) to the logs of ``directory``; the newest epoch
    found (0 if none) and the logs written, which must be synced before the journal is started
    over. A torn header's file is wiped, once the logs are synced."""
    os.lseek(fd, 0, os.SEEK_SET)
    data = b"".join(iter(lambda: os.read(fd, GROWTH), b""))
    found, torn = _halves(data)
    applying = _Applying(directory, path)
    records = 0
    for epoch, start, limit in sorted(found):
        records += applying.half(data, epoch, start, min(limit, len(data)))
    if records:
        logger.warning(  # a clean stop leaves none: the last log's close checkpoints
            "%s: %d records applied to their logs (the host stopped without closing them: "
            "a crash?)",
            path,
            records,
        )
    if torn:
        # Only a switch or a full checkpoint writes a header, over a half whose logs are
        # synced: none of its records is needed. The file is wiped, so that none of them is
        # ever read under a new epoch.
        logger.warning("%s: a header was torn by a crash: its half holds nothing", path)
        sync_logs(directory, sorted(applying.written))
        write_at(fd, bytes(len(data)), 0)
        os.fsync(fd)
    return max((epoch for epoch, _, _ in found), default=0), applying.written


def _halves(data: bytes) -> tuple[list[tuple[int, int, int]], bool]:
    """(epoch, where its records start, where they must end) of each half whose header is
    whole, and whether a header was torn (neither whole nor never written)."""
    if data[:4] == _OLD_MAGIC and len(data) >= _OLD_HEADER.size:
        magic, epoch, crc = _OLD_HEADER.unpack_from(data)
        if crc == zlib.crc32(magic + _EPOCH.pack(epoch)):
            return [(epoch, START, len(data))], False
        return [], True
    found, torn = [], False
    for half, at in enumerate((0, SECOND_HEADER)):
        raw = data[at : at + _HEADER.size]
        if len(raw) < _HEADER.size or not raw.strip(b"\0"):
            continue  # never written
        magic, epoch, size, crc = _HEADER.unpack(raw)
        if magic != _MAGIC or crc != zlib.crc32(magic + _EPOCH.pack(epoch) + _EPOCH.pack(size)):
            torn = True
            continue
        found.append((epoch, START + half * size, START + (half + 1) * size))
    return found, torn


class _Applying:
    """The records of a journal being applied to the logs of ``directory``."""

    def __init__(self, directory: Path, path: Path) -> None:
        self.directory, self.path = directory, path
        self.written: set[str] = set()

    def half(self, data: bytes, epoch: int, start: int, end: int) -> int:
        """Apply the records of one half, up to the first that is not whole; how many."""
        position, records = start, 0
        while position + RECORD.size <= end:
            length, record_epoch, crc = RECORD.unpack_from(data, position)
            payload = data[position + RECORD.size : position + RECORD.size + length]
            if not length or record_epoch != epoch or len(payload) < length:
                break
            if crc != _crc(epoch, payload):
                why = "%s: a record torn by a crash at byte %d: dropped"
                logger.warning(why, self.path, position)
                break
            self._payload(payload)
            position += RECORD.size + length
            records += 1
        return records

    def _payload(self, payload: bytes) -> None:
        position = 0
        while position < len(payload):
            name_length, offset, length = _ENTRY.unpack_from(payload, position)
            position += _ENTRY.size
            name = payload[position : position + name_length].decode()
            position += name_length
            data = payload[position : position + length]
            position += length
            self._entry(name, offset, data)

    def _entry(self, name: str, offset: int, data: bytes) -> None:
        path = self.directory / name
        if path.name != name or name in (".", "..", NAME):
            raise LogError(f"{self.path}: a record names {name!r}, which is not a log's file")
        if offset and not path.exists():
            logger.warning("%s: %s was removed: its bytes in the journal are left", self.path, path)
            return
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | BINARY, 0o666)
        try:
            size = os.fstat(fd).st_size
            if size < offset:
                raise LogError(
                    f"{path}: the journal {self.path} holds its bytes from byte {offset}, but the "
                    f"file holds only {size}: the lines between were lost"
                )
            write_at(fd, data, offset)
        finally:
            os.close(fd)
        self.written.add(name)


def sync_logs(directory: Path, names: list[str]) -> None:
    """fsync the logs ``names`` of ``directory``, then the folder (for the names of new ones)."""
    for name in names:
        _fsync_file(directory / name)
    fsync_directory(directory)


def write_at(fd: int, data: bytes, offset: int) -> None:
    """Write all of ``data`` at ``offset`` (a seek and writes: ``os.pwrite`` is not everywhere;
    the journal is used from one thread)."""
    os.lseek(fd, offset, os.SEEK_SET)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def datasync(fd: int) -> None:
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
