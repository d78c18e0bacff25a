"""Writing a batch now (:meth:`EventLog.write_now`, :meth:`FileRepository.commit_now`): a room
host's batch of a journaled file repository is written and synced without waiting for a turn
of the loop, and its logs are the same bytes an awaited flush writes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from matchlock.app.hosting import RoomHost
from matchlock.core import events as ev
from matchlock.store import FileRepository
from matchlock.store.eventlog import EventLog

EVENT = ev.PieceStarted(at=1, user_id="alice", piece="chars/kfm")


async def test_a_log_written_now_is_synced_by_commit_now_without_a_turn_of_the_loop(
    tmp_path: Path,
) -> None:
    repo = FileRepository(tmp_path, sync="journal")
    log = EventLog.new(repo.create("r1"), "room/r1", "every")
    assert log.writes_now
    log.buffer(EVENT)
    synced = log.write_now()
    await asyncio.sleep(0)
    assert synced is not None and not synced.done()  # no turn of the loop commits it: the caller
    assert repo.journal is not None
    before = repo.journal.synced
    repo.commit_now()
    assert synced.done() and repo.journal.synced > before
    assert log.write_now() is None  # nothing buffered: nothing to wait for
    await log.close()
    flushed = EventLog.new(FileRepository(tmp_path / "b", sync="journal").create("r1"), "room/r1")
    flushed.buffer(EVENT)
    await flushed.close()
    assert (tmp_path / "r1.log").read_bytes() == (tmp_path / "b" / "r1.log").read_bytes()


async def test_logs_that_cannot_write_now_are_flushed() -> None:
    log = EventLog.in_memory("room/r1")
    assert not log.writes_now  # a memory store, and a file synced in a thread, await a flush
    async with log._writing:
        assert not log.writes_now  # nor while a flush is under way


async def test_a_room_hosts_batch_of_many_rooms_commits_without_suspending(
    tmp_path: Path,
) -> None:
    host = RoomHost(tmp_path)
    for room_id in ("r1", "r2", "r3"):
        log = host.logs[room_id] = EventLog.new(host.store.create(room_id), f"room/{room_id}")
        log.durability = "every"
        log.buffer(EVENT)
        host._dirty.add(room_id)
    step = host._commit([])
    try:
        step.send(None)  # runs to its end at once: it never waited for the loop
    except StopIteration as ended:
        assert ended.value == []
    else:
        raise AssertionError("the commit waited for a turn of the loop")
    for room_id in ("r1", "r2", "r3"):
        assert (tmp_path / f"{room_id}.log").read_bytes().count(b"\n") == 2  # header, event
        await host.logs[room_id].close()
