"""A power loss modelled on the files of a journaled file repository, and the restart after it.

What a machine crash leaves, by what :mod:`matchlock.store.journal` synced: every record of the
half not being written (the switch to the other half synced them), the records of the half
being written up to :attr:`~matchlock.store.journal.Journal.synced`, and every byte of a log
that a checkpoint synced survive. The checkpoint of a full half, which runs in a thread, is
taken to have synced nothing. A log's bytes that a record of either half holds were never
synced in the log itself: those the synced records hold are zeros after the crash (only the
journal can give them back), and of those only later records or the entries not yet written
hold (both lost: the process dies with the entries), ``survive(file name, unsynced)`` stay.
Then the journal recovers, as a restarted host's does.
"""

from __future__ import annotations

import os
import struct
from collections import Counter
from collections.abc import Callable

from matchlock.store.journal import Journal

RECORD = struct.Struct("<IQI")
ENTRY = struct.Struct("<HQI")


def entries(journal: Journal, start: int, end: int) -> list[tuple[str, int, int]]:
    """(file name, offset, length) of every entry in the records from ``start`` to ``end``."""
    with open(journal.path, "rb") as file:
        file.seek(start)
        return parsed(file.read(end - start), [])


def parsed(records: bytes, payloads: list[bytes]) -> list[tuple[str, int, int]]:
    found = []
    payloads = list(payloads)
    while records:
        length, _, _ = RECORD.unpack_from(records)
        payloads.append(records[RECORD.size : RECORD.size + length])
        records = records[RECORD.size + length :]
    for payload in payloads:
        position = 0
        while position < len(payload):
            name_length, offset, length = ENTRY.unpack_from(payload, position)
            start = position + ENTRY.size
            found.append((payload[start : start + name_length].decode(), offset, length))
            position = start + name_length + length
    return found


def cut_the_power(journal: Journal, survive: Callable[[str, int], int]) -> None:
    """Lose what a machine crash may lose now (see the module docs), then recover."""
    journal._finish_checkpoint()  # what it synced is zeroed below all the same
    active, other = journal._active, 1 - journal._active
    synced = entries(journal, journal._start(other), journal._ends[other])
    synced += entries(journal, journal._start(active), journal.synced)
    later = entries(journal, journal.synced, journal._ends[active]) + parsed(b"", journal._entries)
    unsynced: Counter[str] = Counter()
    for name, _, length in later:
        unsynced[name] += length
    since_checkpoint: dict[str, int] = {}
    for name, offset, _ in synced:
        since_checkpoint.setdefault(name, offset)
    for name in {name for name, _, _ in synced + later}:
        path = journal.directory / name
        if not path.exists():
            continue
        lost = unsynced[name]
        durable = path.stat().st_size - lost
        os.truncate(path, durable + min(lost, survive(name, lost)))
        start = since_checkpoint.get(name, durable)
        fd = os.open(path, os.O_WRONLY)
        try:
            os.pwrite(fd, bytes(durable - start), start)
        finally:
            os.close(fd)
    fd = os.open(journal.path, os.O_WRONLY)
    try:  # the records after the last sync never reached the disk
        os.pwrite(fd, bytes(journal._ends[active] - journal.synced), journal.synced)
    finally:
        os.close(fd)
    journal._entries.clear()
    journal._names.clear()
    journal._waiters.clear()
    for written in journal._written:
        written.clear()
    journal._recover()
    journal.checkpoint()
