"""The write-ahead journal of a room host's logs (:mod:`matchlock.store.journal`): one
``fdatasync`` for every log a turn wrote, its records applied again after a crash (up to a torn
one), checkpoints that start it over, and the errors that name what was lost. The power-loss
model every store passes is in ``test_contract.py``."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from pathlib import Path

import pytest

from matchlock.app.hosting import RoomHost
from matchlock.core.errors import LogError
from matchlock.store import FileRepository
from matchlock.store.journal import NAME, Journal

LINE = b'{"seq":1}\n'


class Syncs:
    """Counts of every fsync and fdatasync the process makes, and of its ``pwrite`` calls (the
    journal's direct writes, each synced: :mod:`matchlock.store.direct`)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.fsync = self.fdatasync = self.pwrite = 0
        real_fsync, real_fdatasync, real_pwrite = os.fsync, os.fdatasync, os.pwrite

        def fsync(fd: int) -> None:
            self.fsync += 1
            real_fsync(fd)

        def fdatasync(fd: int) -> None:
            self.fdatasync += 1
            real_fdatasync(fd)

        def pwrite(fd: int, data: memoryview, offset: int) -> int:
            self.pwrite += 1
            return real_pwrite(fd, data, offset)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "fdatasync", fdatasync)
        monkeypatch.setattr(os, "pwrite", pwrite)


def journaled(folder: Path) -> FileRepository:
    return FileRepository(folder, sync="journal")


def lose_the_logs_page_cache(folder: Path) -> dict[str, bytes]:
    """What the logs held; each is then emptied, or removed when it is ``gone.log`` (as if its
    bytes, and its name, had never left the page cache)."""
    held = {path.name: path.read_bytes() for path in folder.glob("*.log")}
    for name in held:
        path = folder / name
        path.unlink() if name == "gone.log" else os.truncate(path, 0)
    return held


async def test_a_turn_of_durable_appends_to_many_logs_is_one_synced_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = journaled(tmp_path)
    stores = [repo.create(f"r{index}") for index in range(10)]
    await asyncio.gather(*(store.append([LINE], durable=False) for store in stores))
    syncs = Syncs(monkeypatch)
    await asyncio.gather(*(store.append([LINE, LINE], durable=True) for store in stores))
    assert syncs.fdatasync + syncs.pwrite == 1  # a direct write, or a write and fdatasync
    assert syncs.fsync == 0  # no log file synced on its own
    for store in stores:
        assert store.path.read_bytes() == LINE * 3
        await store.close()


async def test_a_durable_append_returns_only_once_its_record_is_synced(tmp_path: Path) -> None:
    repo = journaled(tmp_path)
    store = repo.create("r1")
    await store.append([LINE], durable=False)
    assert repo.journal is not None
    before = repo.journal.synced
    await store.append([LINE], durable=True)
    assert repo.journal.synced > before
    await store.close()


async def test_after_a_crash_every_synced_record_is_applied_to_its_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repo = journaled(tmp_path)
    stores = {name: repo.create(name) for name in ("r1", "r2", "gone")}
    for turn in range(3):
        await asyncio.gather(
            *(store.append([LINE * (turn + 1)], durable=True) for store in stores.values())
        )
    held = lose_the_logs_page_cache(tmp_path)
    with caplog.at_level(logging.WARNING):
        assert await journaled(tmp_path).ids() == ["gone", "r1", "r2"]  # gone's name came back
    assert "3 records applied to their logs" in caplog.text
    assert {path.name: path.read_bytes() for path in tmp_path.glob("*.log")} == held


async def test_a_torn_record_ends_the_recovery_and_the_records_before_it_are_applied(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repo = journaled(tmp_path)
    store = repo.create("r1")
    await store.append([b"first\n"], durable=True)
    await store.append([b"second\n"], durable=True)
    journal = (tmp_path / NAME).read_bytes()
    where = journal.rindex(b"second")
    with (tmp_path / NAME).open("r+b") as file:  # the crash came while it was being written
        file.seek(where)
        file.write(b"s3cond")
    os.truncate(tmp_path / "r1.log", 0)
    with caplog.at_level(logging.WARNING):
        await journaled(tmp_path).ids()
    assert (tmp_path / "r1.log").read_bytes() == b"first\n"
    assert "torn by a crash" in caplog.text


async def test_a_torn_header_applies_nothing_and_wipes_the_old_records(tmp_path: Path) -> None:
    repo = journaled(tmp_path)
    store = repo.create("r1")
    await store.append([b"first\n"], durable=True)
    with (tmp_path / NAME).open("r+b") as file:
        file.write(b"\xff")  # only a checkpoint writes the header, once every log is synced
    await journaled(tmp_path).ids()
    assert (tmp_path / "r1.log").read_bytes() == b"first\n"
    assert not (tmp_path / NAME).read_bytes()[4096:].strip(b"\0")  # nothing left to misread


async def test_a_full_journal_is_checkpointed_and_starts_over(tmp_path: Path) -> None:
    repo = journaled(tmp_path)
    assert repo.journal is not None
    repo.journal.capacity = 4096 + 400
    store = repo.create("r1")
    await store.append([LINE], durable=True)
    first = repo.journal.epoch
    for _ in range(40):
        await store.append([LINE * 3], durable=True)
    await store.append([LINE * 100], durable=True)  # larger than the journal: synced in its log
    assert repo.journal.epoch > first + 5
    assert store.path.read_bytes() == LINE * 221
    os.truncate(store.path, 0)  # what a checkpoint synced is not the journal's to give back
    await journaled(tmp_path).ids()
    assert not store.path.read_bytes()


async def test_a_removed_log_is_not_made_again_by_the_journal(tmp_path: Path) -> None:
    repo = journaled(tmp_path)
    store = repo.create("r1")
    await store.append([LINE], durable=True)
    await repo.remove("r1")
    assert await journaled(tmp_path).ids() == []
    await store.close()


async def test_a_log_shorter_than_the_journal_says_is_named(tmp_path: Path) -> None:
    repo = journaled(tmp_path)
    store = repo.create("r1")
    await store.append([LINE], durable=True)
    assert repo.journal is not None
    repo.journal.checkpoint()  # r1's first line is synced in r1.log itself
    await store.append([LINE], durable=True)
    os.truncate(store.path, 0)  # the disk lost synced bytes: the journal cannot give them back
    with pytest.raises(
        LogError, match=r"r1\.log: the journal .* from byte 10, but the file holds only 0"
    ):
        await journaled(tmp_path).ids()


async def test_a_failed_sync_fails_every_waiting_append_and_every_later_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = journaled(tmp_path)
    first, second = repo.create("r1"), repo.create("r2")
    await asyncio.gather(first.append([LINE], durable=False), second.append([LINE], durable=False))

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "the disk lost it")

    def failing_write(fd: int, data: memoryview, offset: int) -> int:
        raise OSError(errno.EIO, "the disk lost it")

    monkeypatch.setattr(os, "fdatasync", failing)
    monkeypatch.setattr(os, "pwrite", failing_write)  # a direct write fails the same
    outcomes = await asyncio.gather(
        first.append([LINE], durable=True), second.append([LINE], durable=True),
        return_exceptions=True,
    )  # fmt: skip
    assert all(isinstance(o, OSError) and o.errno == errno.EIO for o in outcomes)
    with pytest.raises(OSError, match="an earlier write failed"):
        await first.append([LINE], durable=False)


async def test_the_last_log_closing_leaves_the_journal_empty(tmp_path: Path) -> None:
    repo = journaled(tmp_path)
    store = repo.create("r1")
    await store.append([LINE], durable=True)
    await store.close()
    os.truncate(store.path, 0)  # synced by the checkpoint at close: nothing to give back
    await journaled(tmp_path).ids()
    assert not store.path.read_bytes()


def test_a_room_host_keeps_its_file_logs_with_a_journal(tmp_path: Path) -> None:
    store = RoomHost(tmp_path).store
    assert isinstance(store, FileRepository) and isinstance(store.journal, Journal)
    assert store.create("r1").journal is store.journal
