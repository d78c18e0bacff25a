"""How the file store reaches the disk: a write at once from the event loop, then, for a durable
append, the file's fsync in a worker thread, each file's error its own, and a file closed only
once the sync of a cancelled append is over (a journaled repository's: ``test_journal.py``)."""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from matchlock.store import FileRepository, files

LINE = b'{"seq":1}\n'


class CountingPool(ThreadPoolExecutor):
    """A thread pool that counts the jobs handed to it."""

    def __init__(self) -> None:
        super().__init__(max_workers=4)
        self.jobs = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.jobs += 1
        return super().submit(fn, *args, **kwargs)


@pytest.fixture
def pool(monkeypatch: pytest.MonkeyPatch) -> CountingPool:
    counting = CountingPool()
    monkeypatch.setattr(files, "_SYNCS", counting)
    return counting


def test_a_plain_append_is_written_before_it_ever_yields(tmp_path: Path) -> None:
    store = FileRepository(tmp_path).create("r1")
    step = store.append([LINE, LINE], durable=False)
    with pytest.raises(StopIteration):  # no hop to a thread: done at its first step
        step.send(None)
    assert store.path.read_bytes() == LINE * 2
    asyncio.run(store.close())


async def test_a_failed_sync_is_the_error_of_its_own_file_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = FileRepository(tmp_path)
    good, bad = repo.create("good"), repo.create("bad")
    await asyncio.gather(good.append([LINE], durable=False), bad.append([LINE], durable=False))
    bad_inode = os.stat(bad.path).st_ino
    real = os.fsync

    def failing_fsync(fd: int) -> None:
        if os.fstat(fd).st_ino == bad_inode:
            raise OSError(errno.EIO, "the disk lost it")
        real(fd)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    outcomes = await asyncio.gather(
        good.append([LINE], durable=True), bad.append([LINE], durable=True), return_exceptions=True
    )
    assert outcomes[0] is None
    assert isinstance(outcomes[1], OSError) and outcomes[1].errno == errno.EIO
    await good.close()
    await bad.close()


async def test_a_cancelled_durable_append_leaves_the_others_synced(
    tmp_path: Path, pool: CountingPool
) -> None:
    repo = FileRepository(tmp_path)
    first, second = repo.create("r1"), repo.create("r2")
    cancelled = asyncio.create_task(first.append([LINE], durable=True))
    kept = asyncio.create_task(second.append([LINE], durable=True))
    await asyncio.sleep(0)  # both have written and asked for their sync
    cancelled.cancel()
    await kept
    assert cancelled.cancelled()
    await first.close()  # waits for the sync still running on its file
    await second.close()
    assert pool.jobs == 2  # one sync each

