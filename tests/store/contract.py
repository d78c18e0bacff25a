"""The log store contract: what every :class:`~matchlock.store.LogRepository` (and the
:class:`~matchlock.store.LogStore` it hands out) must do.

:class:`LogRepositoryContract` holds the tests; ``test_contract.py`` subclasses it once per
store (files, memory), each saying only how to make an empty repository and, where the store
can model one, how to cut the power. A new store proves itself by passing this suite.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import pytest

from matchlock.core import events as ev
from matchlock.core.errors import LogCorruptError, LogError, UsageError
from matchlock.store import LogRepository
from matchlock.store.eventlog import EventLog, read_store
from tests.store.test_eventlog import EVENTS, LINES

HEADER = LINES[0]


async def held(repo: LogRepository, log_id: str, lines: list[bytes]) -> None:
    """Put ``lines`` in a new log ``log_id``, closed again."""
    store = repo.create(log_id)
    await store.append(lines, durable=True)
    await store.close()


async def continue_with(repo: LogRepository, log_id: str, events: list[ev.Event]) -> None:
    """Reopen the log, append ``events``, close it."""
    log, _ = await EventLog.reopen(repo.store(log_id), stream="room/r1")
    await log.append(*events)
    await log.close()


def keep(survive: int, log_id: str, unsynced: int) -> int:
    """A power loss that keeps ``survive`` unsynced bytes of every log."""
    return survive


def lines_of(repo: LogRepository, log_id: str) -> list[bytes]:
    """Every line the log holds."""
    return list(repo.store(log_id).read())


class LogRepositoryContract:
    """The tests every log repository passes; subclasses define :meth:`make`."""

    can_lose_power = False
    """Whether :meth:`power_loss` can model a machine crash for this store."""

    def make(self, tmp_path: Path) -> LogRepository:
        """An empty repository of the store under test."""
        raise NotImplementedError

    def power_loss(self, repo: LogRepository, survive: Callable[[str, int], int]) -> None:
        """Cut the power: of each log's unsynced bytes, ``survive(log_id, unsynced)`` stay."""
        raise NotImplementedError

    @pytest.fixture
    def repo(self, tmp_path: Path) -> LogRepository:
        return self.make(tmp_path)

    async def test_a_new_repository_holds_no_log(self, repo: LogRepository) -> None:
        assert await repo.ids() == []
        with pytest.raises(LogError, match="no such log"):
            repo.store("r1")

    async def test_a_created_log_is_held_from_its_first_append(self, repo: LogRepository) -> None:
        store = repo.create("r1")
        assert await repo.ids() == []
        await store.append([HEADER], durable=False)
        assert await repo.ids() == ["r1"]
        await store.close()

    async def test_ids_are_sorted(self, repo: LogRepository) -> None:
        for log_id in ("room-b", "room-a", "room-c"):
            await held(repo, log_id, [HEADER])
        assert await repo.ids() == ["room-a", "room-b", "room-c"]

    async def test_creating_a_held_log_is_refused(self, repo: LogRepository) -> None:
        await held(repo, "r1", [HEADER])
        with pytest.raises(UsageError, match="already exists"):
            repo.create("r1")
        assert lines_of(repo, "r1") == [HEADER]

    async def test_lines_read_back_in_append_order_from_any_position(
        self, repo: LogRepository
    ) -> None:
        store = repo.create("r1")
        for start in range(0, len(LINES), 4):
            await store.append(LINES[start : start + 4], durable=start % 8 == 0)
        await store.close()
        assert lines_of(repo, "r1") == LINES
        assert list(repo.store("r1").read(5)) == LINES[5:]
        assert list(repo.store("r1").read(len(LINES))) == []

    async def test_a_removed_log_is_gone(self, repo: LogRepository) -> None:
        await held(repo, "r1", [HEADER])
        await held(repo, "r2", [HEADER])
        await repo.remove("r1")
        assert await repo.ids() == ["r2"]
        with pytest.raises(LogError):
            repo.store("r1")
        await held(repo, "r1", LINES[:2])  # the id is free again
        assert lines_of(repo, "r1") == LINES[:2]

    async def test_the_chain_continues_across_reopen(self, repo: LogRepository) -> None:
        log = EventLog.new(repo.create("r1"), "room/r1")
        await log.append(*EVENTS[:5])
        await log.close()
        log, found = await EventLog.reopen(repo.store("r1"))
        assert found == EVENTS[:5] and log.seq == 5
        await log.append(*EVENTS[5:])
        await log.close()
        assert lines_of(repo, "r1") == LINES  # the very bytes of a log written in one go
        assert read_store(repo.store("r1")).events == EVENTS

    async def test_a_process_crash_loses_no_line_appended(self, repo: LogRepository) -> None:
        log = EventLog.new(repo.create("r1"), "room/r1", durability="none")
        await log.append(*EVENTS)  # never fsynced, never closed: the process just dies
        assert lines_of(repo, "r1") == LINES

    @pytest.mark.parametrize("kept", [1, 40, -1])
    async def test_a_torn_tail_is_recovered_and_the_chain_continues(
        self, repo: LogRepository, kept: int, caplog: pytest.LogCaptureFixture
    ) -> None:
        torn = LINES[6][:kept]
        await held(repo, "r1", [*LINES[:6], torn])
        contents = read_store(repo.store("r1"))
        assert contents.events == EVENTS[:5]
        assert contents.torn is not None and (contents.torn.line, contents.torn.size) == (
            7,
            len(torn),
        )
        await continue_with(repo, "r1", EVENTS[5:])
        assert "line 7 was torn by a crash" in caplog.text
        assert lines_of(repo, "r1") == LINES

    async def test_an_empty_log_is_recovered(
        self, repo: LogRepository, caplog: pytest.LogCaptureFixture
    ) -> None:
        await held(repo, "r1", [b""])  # the log appeared; nothing of it reached the disk
        assert await repo.ids() == ["r1"]
        contents = read_store(repo.store("r1"))
        assert (contents.header, contents.events) == (None, [])
        assert contents.torn is not None and contents.torn.header and contents.torn.size == 0
        await continue_with(repo, "r1", EVENTS)
        assert "the header was torn by a crash (0 bytes survived)" in caplog.text
        assert lines_of(repo, "r1") == LINES

    async def test_every_torn_header_is_recovered(self, repo: LogRepository) -> None:
        for cut in range(1, len(HEADER)):
            log_id = f"cut{cut}"
            await held(repo, log_id, [HEADER[:cut]])
            log, found = await EventLog.reopen(repo.store(log_id))  # no stream given
            assert found == [] and lines_of(repo, log_id) == []
            await log.append(*EVENTS)
            await log.close()
            assert lines_of(repo, log_id) == LINES, f"cut at byte {cut}"

    async def test_damage_before_the_end_is_raised_and_nothing_is_cut(
        self, repo: LogRepository
    ) -> None:
        changed = [*LINES]
        changed[3] = changed[3].replace(b'"at":', b'"at": ', 1)
        await held(repo, "r1", changed)
        with pytest.raises(LogCorruptError) as caught:
            await EventLog.reopen(repo.store("r1"))
        assert caught.value.line == 4
        assert lines_of(repo, "r1") == changed

    async def test_durable_lines_survive_a_power_loss_and_the_rest_may_not(
        self, repo: LogRepository
    ) -> None:
        if not self.can_lose_power:
            pytest.skip("this store cannot cut its own power")
        store = repo.create("r1")
        await store.append(LINES[:3], durable=True)
        await store.append(LINES[3:6], durable=False)
        self.power_loss(repo, lambda _, unsynced: unsynced)
        assert lines_of(repo, "r1") == LINES[:6]  # nothing lost when everything survives
        await store.append(LINES[6:8], durable=False)
        self.power_loss(repo, lambda _, unsynced: 0)
        assert lines_of(repo, "r1") == LINES[:6]
        await store.append(LINES[6:8], durable=True)
        self.power_loss(repo, lambda _, unsynced: 0)
        assert lines_of(repo, "r1") == LINES[:8]

    async def test_a_power_loss_at_any_byte_of_the_last_write_is_recovered(
        self, repo: LogRepository
    ) -> None:
        if not self.can_lose_power:
            pytest.skip("this store cannot cut its own power")
        first, last = LINES[:6], LINES[6:10]  # the last write: four lines, never fsynced
        written = len(b"".join(last))
        for survive in range(written + 1):
            log_id = f"cut{survive}"
            store = repo.create(log_id)
            await store.append(first, durable=True)
            await store.append(last, durable=False)
            self.power_loss(repo, functools.partial(keep, survive))
            whole = b"".join(last)[:survive].count(b"\n")  # lines that survived whole
            log, found = await EventLog.reopen(repo.store(log_id))
            assert found == EVENTS[: 5 + whole], f"{survive} bytes survived"
            await log.append(*EVENTS[5 + whole :])
            await log.close()
            assert lines_of(repo, log_id) == LINES
            await repo.remove(log_id)
