"""A part's two lanes (:mod:`matchlock.downloads.sink`): the sha256 and the file each take the
batches in order, neither waits for the other on every batch, at most ``IN_HAND`` batches are
held, a write that fails runs nothing after it (no hole in the file), and the content's lock
is released only once both lanes are idle.

The writer is held or failed on purpose (a wrapper around the part's real writer); the file,
the threads and the hash are real."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import threading
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from matchlock.downloads import sink
from matchlock.downloads.cache import Cache, HeldContent
from matchlock.downloads.direct import BLOCK
from matchlock.downloads.sink import IN_HAND, PartFile

BATCH = 300_000  # over INLINE_BYTES: every batch goes to the lanes
BATCHES = [os.urandom(BATCH) for _ in range(6)]
WHOLE = b"".join(BATCHES)
DIGEST = hashlib.sha256(WHOLE).hexdigest()


class Writes:
    """The part's writer, held at write ``hold`` until released, or failing at ``fail``."""

    def __init__(self, part: PartFile, *, hold: int = -1, fail: int = -1) -> None:
        self.started: list[int] = []
        self.release = threading.Event()
        self._real = part._writer.write
        self._hold, self._fail = hold, fail
        part._writer.write = self.write  # type: ignore[method-assign]

    def write(self, chunks: Sequence[bytes | memoryview]) -> None:
        number = len(self.started)
        self.started.append(number)
        if number == self._hold:
            assert self.release.wait(10), "the held write was never released"
        if number == self._fail:
            raise OSError(errno.ENOSPC, "No space left on device")
        self._real(chunks)


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of each batch the hash lane took, in order."""
    seen: list[int] = []
    real = sink._hash

    def record(sha256: hashlib._Hash, chunks: Sequence[bytes | memoryview]) -> None:
        real(sha256, chunks)
        seen.append(sum(len(chunk) for chunk in chunks))

    monkeypatch.setattr(sink, "_hash", record)
    return seen


@asynccontextmanager
async def begun(tmp_path: Path) -> AsyncIterator[tuple[HeldContent, PartFile]]:
    cache = Cache(tmp_path)
    cache.prepare()
    with ThreadPoolExecutor(4) as executor:
        async with cache.locked(DIGEST, executor) as held:
            part = PartFile(held)
            await part.begin(resume=False, source="test:")
            yield held, part


async def test_the_hash_runs_ahead_of_a_stalled_write_by_at_most_the_batches_in_hand(
    tmp_path: Path, hashed: list[int]
) -> None:
    async with begun(tmp_path) as (held, part):
        writes = Writes(part, hold=0)
        for batch in BATCHES[:IN_HAND]:
            await part.write([batch])  # returns at once: the lanes hold up to IN_HAND
        while len(hashed) < IN_HAND:  # every batch in hand is hashed, the first not written
            await asyncio.sleep(0.005)
        assert writes.started == [0]
        taking = asyncio.ensure_future(part.write([BATCHES[IN_HAND]]))
        await asyncio.sleep(0.1)
        assert not taking.done(), "a batch was taken beyond the batches in hand"
        assert len(hashed) == IN_HAND
        writes.release.set()
        await taking
        for batch in BATCHES[IN_HAND + 1 :]:
            await part.write([batch])
        await part.drain()
        assert part.hexdigest() == DIGEST
        assert held.path.read_bytes() == WHOLE
    assert hashed == [BATCH] * len(BATCHES)


async def test_a_failed_write_runs_no_later_write_and_a_resume_hashes_the_file_again(
    tmp_path: Path, hashed: list[int]
) -> None:
    async with begun(tmp_path) as (held, part):
        writes = Writes(part, fail=1)
        with pytest.raises(OSError, match="No space left"):
            for batch in BATCHES:
                await part.write([batch])
        await part.drain()  # nothing is left in hand: the failure is not raised twice
        assert writes.started == [0, 1], "a write ran after the one that failed"
        assert len(hashed) > 1  # the hash lane went on past the failed write
        on_disk = held.path.read_bytes()
        assert on_disk == WHOLE[: len(on_disk)]  # a prefix of the piece: never a hole
        assert await part.begin(resume=True, source="test:") == len(on_disk)
        assert part.hexdigest() == hashlib.sha256(on_disk).hexdigest()
        Writes(part)  # room again: the part continues from what the file holds
        rest = WHOLE[len(on_disk) :]
        for start in range(0, len(rest), BATCH):
            await part.write([rest[start : start + BATCH]])
        await part.drain()
        assert part.hexdigest() == DIGEST
        assert held.path.read_bytes() == WHOLE


async def test_the_lock_is_released_only_once_both_lanes_are_idle(tmp_path: Path) -> None:
    async with begun(tmp_path) as (held, part):
        writes = Writes(part, hold=0)
        for batch in BATCHES[:IN_HAND]:
            await part.write([batch])
        threading.Timer(0.2, writes.release.set).start()
        # Left without a drain, as by a cancelled download: the release waits for the lanes.
    assert writes.started == list(range(IN_HAND))
    on_disk = held.path.read_bytes()  # the writer's unfinished block was never flushed
    assert on_disk == WHOLE[: len(on_disk)] and len(on_disk) > IN_HAND * BATCH - BLOCK


async def test_a_batch_handed_over_once_the_executor_is_shut_down_fails_instead_of_hanging(
    tmp_path: Path,
) -> None:
    cache = Cache(tmp_path)
    cache.prepare()
    executor = ThreadPoolExecutor(2)
    async with cache.locked(DIGEST, executor) as held:
        part = PartFile(held)
        await part.begin(resume=False, source="test:")
        executor.shutdown()  # as at the end of a job, while a download still writes
        await part.write([BATCHES[0]])  # in hand: refused by the executor, not lost
        with pytest.raises(RuntimeError, match="shutdown"):
            await asyncio.wait_for(part.drain(), 10)
        assert held.path.read_bytes() == b""  # nothing half-written
