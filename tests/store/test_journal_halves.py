"""The journal's two halves (:mod:`matchlock.store.journal`): a full half is checkpointed in a
thread while records go on in the other, a half is started over only once its checkpoint is
over, a checkpoint that fails fails the appends after it, a torn header leaves the other half's
records to apply, and a journal of the previous layout (one header) is recovered."""

from __future__ import annotations

import errno
import os
import struct
import threading
import zlib
from pathlib import Path

import pytest

from matchlock.core.errors import UsageError
from matchlock.store import FileRepository, journal_file
from matchlock.store.files import FileStore
from matchlock.store.journal import NAME, Journal

LINE = b'{"seq":1}\n'
HALF = 4096 + 200  # a half holds three records of LINE * 3 to r1.log


async def started(folder: Path) -> tuple[Journal, FileStore]:
    """A journal of small halves in ``folder``, and its log ``r1`` with one durable line."""
    repo = FileRepository(folder, sync="journal")
    assert repo.journal is not None
    repo.journal.capacity = HALF
    store = repo.create("r1")
    await store.append([LINE], durable=True)
    return repo.journal, store


class Checkpoints:
    """Every log a checkpoint syncs is recorded, with whether it was synced in a thread of its
    own; in such a thread, it first waits for ``go`` (then fails with ``error`` if given)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, error: OSError | None = None) -> None:
        self.go = threading.Event()
        self.synced: list[tuple[str, bool]] = []
        real = journal_file._fsync_file

        def fsync_file(path: Path) -> None:
            in_a_thread = threading.current_thread() is not threading.main_thread()
            if in_a_thread:
                self.go.wait()
                if error is not None:
                    raise error
            real(path)
            self.synced.append((path.name, in_a_thread))

        monkeypatch.setattr(journal_file, "_fsync_file", fsync_file)


async def fill_a_half(journal: Journal, store: FileStore) -> int:
    """Append until the journal switches halves; the epoch it switched from."""
    epoch = journal.epoch
    while journal.epoch == epoch:
        await store.append([LINE * 3], durable=True)
    return epoch


async def test_a_full_half_is_checkpointed_in_a_thread_while_durable_appends_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal, store = await started(tmp_path)
    checkpoints = Checkpoints(monkeypatch)
    await fill_a_half(journal, store)
    await store.append([LINE * 3], durable=True)  # synced while the checkpoint waits
    assert not checkpoints.synced and journal.synced > journal._start(1)
    checkpoints.go.set()
    await store.close()
    assert checkpoints.synced[0] == ("r1.log", True)


async def test_a_half_is_started_over_only_once_its_checkpoint_is_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal, store = await started(tmp_path)
    checkpoints = Checkpoints(monkeypatch)
    seen: list[list[tuple[str, bool]]] = []
    write_headers = Journal._write_headers

    def headers(self: Journal) -> None:
        seen.append(list(checkpoints.synced))
        write_headers(self)

    monkeypatch.setattr(Journal, "_write_headers", headers)
    await fill_a_half(journal, store)  # half 0 -> half 1: its checkpoint waits for go
    threading.Timer(0.2, checkpoints.go.set).start()
    await fill_a_half(journal, store)  # half 1 -> half 0: waits for half 0's checkpoint
    assert seen[:2] == [[], [("r1.log", True)]]  # half 0's log was synced in its thread
    await store.close()


async def test_a_checkpoint_that_fails_in_its_thread_fails_the_appends_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal, store = await started(tmp_path)
    checkpoints = Checkpoints(monkeypatch, OSError(errno.EIO, "the disk lost it"))
    checkpoints.go.set()
    await fill_a_half(journal, store)
    with pytest.raises(OSError) as failed:
        await fill_a_half(journal, store)  # the switch back needs the failed checkpoint
    assert failed.value.errno == errno.EIO
    with pytest.raises(OSError, match="an earlier write failed"):
        await store.append([LINE], durable=False)


async def test_a_torn_header_leaves_the_other_halfs_records_to_apply_then_wipes_the_file(
    tmp_path: Path,
) -> None:
    _, store = await started(tmp_path)
    await store.append([LINE * 2], durable=True)
    held = store.path.read_bytes()
    os.truncate(store.path, 0)  # a power loss took the log's unsynced bytes
    with (tmp_path / NAME).open("r+b") as file:
        file.seek(512)  # half 1's header, written at the last checkpoint
        file.write(b"\xff")
    await FileRepository(tmp_path, sync="journal").ids()
    assert store.path.read_bytes() == held
    assert not (tmp_path / NAME).read_bytes()[1024:].strip(b"\0")  # nothing left to misread


async def test_a_journal_of_the_previous_layout_is_recovered(tmp_path: Path) -> None:
    entry = struct.pack("<HQI", len("r1.log"), 0, len(LINE)) + b"r1.log" + LINE
    epoch = struct.pack("<Q", 7)
    record = struct.pack("<IQI", len(entry), 7, zlib.crc32(entry, zlib.crc32(epoch))) + entry
    header = struct.pack("<4sQI", b"MLJ1", 7, zlib.crc32(b"MLJ1" + epoch))
    (tmp_path / NAME).write_bytes(header + bytes(4096 - len(header)) + record + bytes(100))
    assert await FileRepository(tmp_path, sync="journal").ids() == ["r1"]
    assert (tmp_path / "r1.log").read_bytes() == LINE
    assert journal_file._halves((tmp_path / NAME).read_bytes())[0][0][0] > 7


def test_a_journal_too_small_to_hold_a_record_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="a journal half of 5000 bytes holds no record"):
        FileRepository(tmp_path, sync="journal", journal_size=5000)
