"""Reading a welcome's older events back from a room's log file (``read_after``): the events
asked for, each line's hash and its chain to the line before checked, a damaged or short log
refused naming the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from matchlock.core import events as ev
from matchlock.core.errors import LogCorruptError
from matchlock.store import FileStore
from matchlock.store.eventlog import EventLog, read_after

EVENTS = [ev.PieceProgress(at=1.0, user_id="ann", piece="chars/kfm", done=n) for n in range(9)]


async def written(path: Path) -> FileStore:
    log = await EventLog.create(path, "room/r1", "none")
    await log.append(*EVENTS)
    await log.close()
    return FileStore(path)


async def test_the_events_after_since_up_to_upto_are_read_back(tmp_path: Path) -> None:
    store = await written(tmp_path / "r1.log")
    assert read_after(store, 0, 9) == EVENTS
    assert read_after(store, 3, 7) == EVENTS[3:7]
    assert read_after(store, 9, 9) == []


async def test_a_changed_byte_or_a_moved_line_is_refused_naming_its_line(tmp_path: Path) -> None:
    path = tmp_path / "r1.log"
    store = await written(path)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join([*lines[:5], lines[5].replace(b'"done":4', b'"done":5'), *lines[6:]]))
    with pytest.raises(LogCorruptError, match=r"r1.log:6: the line.s hash does not match"):
        read_after(store, 2, 9)
    assert read_after(store, 6, 9) == EVENTS[6:9]  # the lines after it still chain
    path.write_bytes(b"".join([*lines[:4], lines[5], lines[4], *lines[6:]]))
    with pytest.raises(LogCorruptError, match=r"r1.log:5: expected event 4"):
        read_after(store, 2, 9)


async def test_a_log_shorter_than_its_room_is_refused(tmp_path: Path) -> None:
    store = await written(tmp_path / "r1.log")
    with pytest.raises(LogCorruptError, match="holds 9 events, not the 12"):
        read_after(store, 4, 12)
