"""The memory store's several writers: the NATS store's compare-and-append, in memory (the
simulation's cluster nodes share one), and how its power-loss model treats each writer. The
store contract itself is run on it by ``test_contract.py``."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from matchlock.core.errors import LogConflictError
from matchlock.store import MemoryRepository
from matchlock.store.eventlog import EventLog, read_store
from tests.store.test_eventlog import EVENTS, LINES


async def test_two_writers_racing_on_one_log_cannot_fork_it() -> None:
    repo = MemoryRepository()
    await repo.create("r1").append(LINES[:2], durable=True)
    first, second = repo.store("r1"), repo.store("r1")  # both read the log: two lines
    outcomes = await asyncio.gather(
        first.append(LINES[2:4], durable=True),
        second.append([b"a fork\n"], durable=True),
        return_exceptions=True,
    )
    assert outcomes[0] is None and isinstance(outcomes[1], LogConflictError)
    assert "memory:r1: another writer appended first" in str(outcomes[1])
    assert list(repo.store("r1").read()) == LINES[:4]


async def test_a_writer_that_read_less_than_the_log_holds_is_refused() -> None:
    repo = MemoryRepository()
    stale = repo.create("r1")
    await stale.append(LINES[:2], durable=True)
    other = repo.store("r1")
    await other.append(LINES[2:4], durable=True)
    with pytest.raises(LogConflictError, match="the log holds 4 lines, this writer knew of 2"):
        await stale.append(LINES[4:6], durable=True)
    assert list(other.read()) == LINES[:4]
    assert list(stale.read()) == LINES[:4]  # read to the end: it may continue from there
    await stale.append(LINES[4:6], durable=True)
    assert list(repo.store("r1").read()) == LINES[:6]


async def test_a_read_not_to_the_end_leaves_the_writer_where_it_was() -> None:
    repo = MemoryRepository()
    await repo.create("r1").append(LINES[:4], durable=True)
    writer = repo.store("r1")
    await repo.store("r1").append(LINES[4:5], durable=True)
    assert next(writer.read(1)) == LINES[1]  # stopped halfway: it knows no more than before
    with pytest.raises(LogConflictError):
        await writer.append(LINES[5:6], durable=True)


async def test_creating_an_id_another_writer_took_first_conflicts() -> None:
    repo = MemoryRepository()
    mine, theirs = repo.create("r1"), repo.create("r1")  # neither log exists yet
    await theirs.append(LINES[:1], durable=True)
    with pytest.raises(LogConflictError):
        await mine.append([b"another header\n"], durable=True)
    assert list(repo.store("r1").read()) == LINES[:1]


async def test_the_writers_of_a_removed_log_are_refused() -> None:
    repo = MemoryRepository()
    old = repo.create("r1")
    await old.append(LINES[:1], durable=True)
    never_wrote = repo.create("r2")
    await repo.remove("r1")
    await repo.remove("r2")
    new = repo.create("r1")  # the id is free again: a new log
    await new.append(LINES[:2], durable=True)
    for writer in (old, never_wrote):
        with pytest.raises(LogConflictError, match="the log was removed"):
            await writer.append(LINES[1:2], durable=True)
    assert list(repo.store("r1").read()) == LINES[:2] and await repo.ids() == ["r1"]


async def test_a_power_loss_leaves_every_writer_at_the_end_that_survived() -> None:
    repo = MemoryRepository()
    log = EventLog.new(repo.create("r1"), "room/r1", durability="none")
    await log.append(*EVENTS[:5])
    repo.crash(lambda _, unsynced: 0)  # nothing was synced: the log is gone, header and all
    assert repo.stores["r1"].lines == []
    reopened, found = await EventLog.reopen(repo.store("r1"), stream="room/r1")
    assert found == []
    await reopened.append(*EVENTS)  # after the header, from the start
    assert read_store(repo.store("r1")).events == EVENTS


async def test_one_writer_read_by_others_never_conflicts() -> None:
    repo = MemoryRepository()
    log = EventLog.new(repo.create("r1"), "room/r1")
    for count, event in enumerate(EVENTS, start=2):  # readers come and go in between
        await log.append(event)
        assert list(repo.store("r1").read()) == LINES[:count]
        assert len(list(log.store.read(1))) == count - 1
    assert read_store(repo.store("r1")).events == EVENTS


STEPS = st.lists(
    st.tuples(st.integers(0, 2), st.sampled_from(["read", "append", "reopen"])), max_size=40
)


@given(STEPS)
def test_any_interleaving_of_writers_keeps_one_log_of_what_was_accepted(
    steps: list[tuple[int, str]],
) -> None:
    """Three writers of one log read, append and reopen in any order: an append is accepted
    exactly when its writer knew the whole log, and the log is what was accepted, in order."""
    repo = MemoryRepository()
    writers = [repo.create("r1") for _ in range(3)]
    accepted: list[bytes] = []
    known = [0, 0, 0]  # what each writer last saw of the log, as the model says

    async def run() -> None:
        for number, (who, step) in enumerate(steps):
            if step == "read":
                list(writers[who].read())
                known[who] = len(accepted)
            elif step == "reopen" and accepted:
                writers[who] = repo.store("r1")
                known[who] = len(accepted)
            elif step == "append":
                line = f"{number} by {who}\n".encode()
                try:
                    await writers[who].append([line], durable=number % 2 == 0)
                except LogConflictError:
                    assert known[who] != len(accepted)
                else:
                    assert known[who] == len(accepted)
                    accepted.append(line)
                    known[who] = len(accepted)

    asyncio.run(run())
    assert repo.stores["r1"].lines == accepted
