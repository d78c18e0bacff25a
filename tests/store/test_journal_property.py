"""Fault injection on the room host's journal: any sequence of appends to a few logs, durable or
not, through a journal small enough to checkpoint often, then a power loss that keeps any
number of each log's unsynced bytes (``journal_loss.cut_the_power``, which also zeroes what
only the journal made durable) and the recovery after it. Every log must then hold a prefix of
what was appended to it, and at least every byte whose durable append had returned."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from matchlock.store import FileRepository
from tests.store.journal_loss import cut_the_power

LOGS = ("r0", "r1", "r2")

appends = st.lists(
    st.tuples(st.sampled_from(LOGS), st.integers(1, 120), st.booleans(), st.booleans()),
    min_size=1,
    max_size=40,
)


async def run(
    folder: Path, steps: list[tuple[str, int, bool, bool]], capacity: int, keep: list[int]
) -> dict[str, tuple[bytes, int]]:
    """Append ``steps`` (log, size, durable, wait for it), cut the power keeping ``keep``'s
    bytes of each log's unsynced ones; what each log was given and the bytes made durable."""
    repo = FileRepository(folder, sync="journal")
    assert repo.journal is not None
    repo.journal.capacity = capacity
    stores = {log_id: repo.create(log_id) for log_id in LOGS}
    given_to: dict[str, bytes] = dict.fromkeys(LOGS, b"")
    durable: dict[str, int] = dict.fromkeys(LOGS, 0)
    waiting: list[asyncio.Task[None]] = []
    for number, (log_id, size, is_durable, wait) in enumerate(steps):
        line = (f"{number:04d}" * size)[: size - 1].encode() + b"\n"
        given_to[log_id] += line
        task = asyncio.create_task(stores[log_id].append([line], durable=is_durable))
        if wait:
            await task
            if is_durable:
                durable[log_id] = len(given_to[log_id])
        else:
            waiting.append(task)
    await asyncio.sleep(0)  # appends started, the last turn's record maybe not written yet
    cut_the_power(repo.journal, lambda name, unsynced: min(unsynced, keep[int(name[1])]))
    for task in waiting:
        task.cancel()
    return {log_id: (given_to[log_id], durable[log_id]) for log_id in LOGS}


@given(
    steps=appends,
    capacity=st.integers(4096 + 64, 4096 + 2000) | st.just(2 * 4096),  # whole blocks: direct
    keep=st.lists(st.integers(0, 400), min_size=3, max_size=3),
)
def test_after_any_power_loss_every_log_is_a_prefix_holding_its_durable_bytes(
    steps: list[tuple[str, int, bool, bool]], capacity: int, keep: list[int]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        appended = asyncio.run(run(folder, steps, capacity, keep))
        restarted = FileRepository(folder, sync="journal").journal
        assert restarted is not None
        restarted.open()
        for log_id, (given_to, durable) in appended.items():
            path = folder / f"{log_id}.log"
            held = path.read_bytes() if path.exists() else b""
            assert given_to.startswith(held), f"{log_id} holds what it was never given"
            assert len(held) >= durable, f"{log_id} lost {durable - len(held)} durable bytes"
