"""The journal's direct writes (:mod:`matchlock.store.direct`): a synced record is one
``O_DIRECT | O_DSYNC`` write of whole blocks that keeps the records already in its first block,
and the journal falls back to a write and ``fdatasync`` where a direct write cannot be made
(no ``O_DIRECT``, a file system that refuses it, records before it not synced)."""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path

import pytest

from matchlock.store import FileRepository
from matchlock.store.direct import BLOCK, DirectWriter
from matchlock.store.files import FileStore
from matchlock.store.journal import NAME

from .journal_loss import entries

LINE = b'{"seq":1}\n'


class Calls:
    """Counts of fdatasync and pwrite calls; ``refuse`` pwrite calls fail with EINVAL first."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, refuse: int = 0) -> None:
        self.fdatasync = self.pwrite = 0
        self.refuse = refuse
        real_fdatasync, real_pwrite = os.fdatasync, os.pwrite

        def fdatasync(fd: int) -> None:
            self.fdatasync += 1
            real_fdatasync(fd)

        def pwrite(fd: int, data: memoryview, offset: int) -> int:
            if self.refuse:
                self.refuse -= 1
                raise OSError(errno.EINVAL, "Invalid argument")
            self.pwrite += 1
            return real_pwrite(fd, data, offset)

        monkeypatch.setattr(os, "fdatasync", fdatasync)
        monkeypatch.setattr(os, "pwrite", pwrite)


async def started(folder: Path, durable: bool = True) -> tuple[FileRepository, FileStore]:
    """A journaled repository in ``folder`` and its log ``r1``, with one line appended."""
    repo = FileRepository(folder, sync="journal")
    store = repo.create("r1")
    await store.append([LINE], durable=durable)
    return repo, store


@pytest.fixture
def direct(tmp_path: Path) -> None:
    """Skip where the test folder's file system takes no direct write (tmpfs, not Linux)."""
    (tmp_path / "probe").write_bytes(bytes(BLOCK))
    probe = DirectWriter.open(tmp_path / "probe")
    (tmp_path / "probe").unlink()
    if probe is None:
        pytest.skip(f"{tmp_path}'s file system takes no O_DIRECT")
    probe.close()


@pytest.mark.usefixtures("direct")
async def test_durable_records_are_direct_writes_that_keep_the_records_before_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, store = await started(tmp_path)
    assert repo.journal is not None
    calls = Calls(monkeypatch)
    for count in range(1, 40):  # about 1.5 KiB each: some records cross a block's end
        await store.append([LINE * count * 4], durable=True)
    assert (calls.fdatasync, calls.pwrite) == (0, 39)
    found = entries(repo.journal, 4096, repo.journal.synced)  # read back: every record whole
    assert [length for _, _, length in found] == [len(LINE) * n * 4 or len(LINE) for n in range(40)]
    await store.close()


@pytest.mark.usefixtures("direct")
async def test_a_record_after_unsynced_blocks_is_written_and_fdatasynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, store = await started(tmp_path)
    calls = Calls(monkeypatch)
    await store.append([LINE * (BLOCK // len(LINE) + 1)], durable=False)  # a block and more
    await asyncio.sleep(0)  # its record is written, not synced
    await store.append([LINE], durable=True)  # the block before its own is not synced
    assert (calls.fdatasync, calls.pwrite) == (1, 0)
    await store.append([LINE], durable=True)  # everything before it is synced now
    assert (calls.fdatasync, calls.pwrite) == (1, 1)
    await store.close()


@pytest.mark.usefixtures("direct")
async def test_a_file_system_that_refuses_a_direct_write_gets_a_write_and_fdatasync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, store = await started(tmp_path, durable=False)
    calls = Calls(monkeypatch, refuse=1)
    await store.append([LINE], durable=True)
    await store.append([LINE], durable=True)  # the writer closed: no direct write tried again
    assert (calls.fdatasync, calls.pwrite, calls.refuse) == (2, 0, 0)
    assert store.path.read_bytes() == LINE * 3
    await store.close()


async def test_without_o_direct_every_synced_record_is_a_write_and_fdatasync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(os, "O_DIRECT", raising=False)
    assert DirectWriter.open(tmp_path / NAME) is None
    _, store = await started(tmp_path)
    calls = Calls(monkeypatch)
    await store.append([LINE], durable=True)
    assert (calls.fdatasync, calls.pwrite) == (1, 0)
    await store.close()


def test_a_writer_that_does_not_know_a_blocks_first_bytes_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(bytes(4 * BLOCK))
    writer = DirectWriter.open(path)
    if writer is None:
        pytest.skip(f"{tmp_path}'s file system takes no O_DIRECT")
    assert writer.write(BLOCK, b"a" * 10)
    assert not writer.write(BLOCK + 20, b"b")  # bytes 10 to 20 of the block are not known
    writer.note(BLOCK + 10, b"c" * 10)  # written through the page cache: now they are
    assert writer.write(BLOCK + 20, b"d" * 10)
    writer.close()
    assert path.read_bytes()[BLOCK : BLOCK + 31] == b"a" * 10 + b"c" * 10 + b"d" * 10 + b"\0"
