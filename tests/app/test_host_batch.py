"""A room host's group commit (:class:`~matchlock.app.hosting.RoomHost`): outputs queued in
the next turn of the loop, by other connections, join the batch, whose logs are then
synced by one record of the journal."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from matchlock.app.hosting import RoomHost
from matchlock.core import events as ev
from matchlock.core.hosted import HostOutput, Recorded
from matchlock.store import FileRepository


def output(room_id: str) -> HostOutput:
    event = ev.PieceStarted(at=1, user_id="alice", piece="chars/kfm")
    return HostOutput(events=[Recorded(room_id, event, ev.EventAdapter.dump_json(event))])


async def test_outputs_of_the_next_turn_join_the_batch_and_its_one_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = RoomHost(tmp_path)
    assert isinstance(host.store, FileRepository)
    commits = 0
    commit_now = host.store.commit_now

    def counted() -> None:
        nonlocal commits
        commits += 1
        commit_now()

    monkeypatch.setattr(host.store, "commit_now", counted)
    await host.start()
    host._do(output("r1"))  # wakes the sender at the next turn...
    asyncio.get_running_loop().call_soon(host._do, output("r2"))  # ...where r2's arrives too
    await host._outbox.join()
    assert commits == 1
    assert all((tmp_path / f"{room}.log").read_bytes().count(b"\n") == 2 for room in ("r1", "r2"))
    await host.stop()
