"""The file store beyond the contract: the on-disk layout, what is fsynced, and a real log file
cut by a power loss at every byte of its first and of its last write (docs/durability.md)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from matchlock.core.errors import UsageError
from matchlock.store import FileRepository
from matchlock.store.eventlog import EventLog, read_events
from tests.store.test_eventlog import EVENTS, LINES


async def test_a_log_is_the_file_id_dot_log_with_the_same_bytes_as_ever(tmp_path: Path) -> None:
    repo = FileRepository(tmp_path / "rooms")
    log = EventLog.new(repo.create("r1"), "room/r1")
    await log.append(*EVENTS)
    await log.close()
    assert [p.name for p in (tmp_path / "rooms").iterdir()] == ["r1.log"]
    assert (tmp_path / "rooms" / "r1.log").read_bytes() == b"".join(LINES)
    (tmp_path / "rooms" / "notes.txt").write_text("not a log")
    (tmp_path / "rooms" / "old.log").mkdir()
    assert await repo.ids() == ["r1"]


@pytest.mark.parametrize("log_id", ["", ".", "..", "a/b", "..\\up"])
def test_a_log_id_cannot_leave_the_directory(tmp_path: Path, log_id: str) -> None:
    with pytest.raises(UsageError, match="not a log id"):
        FileRepository(tmp_path).create(log_id)


async def test_a_durable_append_fsyncs_the_file_and_once_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append("directory" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    store = FileRepository(tmp_path).create("r1")
    await store.append(LINES[:2], durable=False)
    assert synced == []
    await store.append(LINES[2:4], durable=True)
    assert synced == ["file", "directory"]  # the new file's name survives with its lines
    await store.append(LINES[4:6], durable=True)
    assert synced == ["file", "directory", "file"]
    await store.close()


async def write_in_batches(path: Path, batches: list[int]) -> list[int]:
    """Write EVENTS to ``path`` as the host does, one write per batch (the first holds the
    header); returns the byte offset where each write ended."""
    log = EventLog.start(path, "room/r1")
    ends, start = [], 0
    for size in batches:
        log.buffer(*EVENTS[start : start + size])
        await log.flush()
        ends.append(path.stat().st_size)
        start += size
    await log.close()
    return ends


@pytest.mark.parametrize("write", ["first", "last"])
async def test_a_cut_at_any_byte_of_a_write_recovers_every_whole_event_before_it(
    tmp_path: Path, write: str
) -> None:
    """A power loss after a write reached the OS but before it was fsynced may keep any prefix
    of it: the header and first event of a new log, or the last batch of progress."""
    whole = tmp_path / "whole.log"
    ends = await write_in_batches(whole, [1, len(EVENTS) - 6, 5])
    data = whole.read_bytes()
    begin, end = (0, ends[0]) if write == "first" else (ends[-2], ends[-1])
    path = tmp_path / "cut.log"
    for cut in range(begin, end + 1):
        path.write_bytes(data[:cut])
        before = data[:cut].count(b"\n") - 1  # whole events (the header is line 0)
        contents = read_events(path)
        assert contents.events == EVENTS[: max(before, 0)], f"cut at byte {cut}"
        assert (contents.torn is None) == (cut > 0 and data[cut - 1] == ord("\n"))
        log, found = await EventLog.open(path, durability="none")  # fsync is not under test
        await log.append(*EVENTS[len(found) :])
        await log.close()
        assert path.read_bytes() == data, f"cut at byte {cut}: the chain did not continue"


async def test_listing_logs_where_no_directory_can_be_made_fails_at_once(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("a file, not a directory")
    with pytest.raises(OSError):
        await FileRepository(tmp_path / "file" / "rooms").ids()
