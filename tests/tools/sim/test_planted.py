"""Bugs planted in the shells themselves are found by a seed in 0-9: the simulation runs the
code of ``matchlock join`` and ``matchlock serve``, so a bug in it is within a seed's reach.

Each test replaces one function of the real shell with a variant that has the bug, runs the
seeds 0-9, and checks that some seed fails on the invariant the bug breaks, and that the same
seed passes once the real function is back (so it is the planted bug that was found). The host
core's plantable bugs are in ``tests/tools/test_simulation.py``.
"""

from __future__ import annotations

import asyncio

import pytest

from matchlock.app import hosting, joining
from matchlock.core import events as ev
from matchlock.tools.sim import SimulationFailure, simulate
from matchlock.transport import ConnectionClosed


def first_failure() -> SimulationFailure | None:
    for seed in range(10):
        try:
            simulate(seed)
        except SimulationFailure as failure:
            return failure
    return None


def found_only_when_planted(
    monkeypatch: pytest.MonkeyPatch, target: object, name: str, buggy: object
) -> str:
    """Plant ``buggy`` as ``target.name``, find a failing seed in 0-9, take the plant out,
    check that seed passes; returns the invariant the bug broke."""
    with monkeypatch.context() as planted:
        planted.setattr(target, name, buggy)
        failure = first_failure()
    assert failure is not None, f"no seed in 0..9 found the planted {name}"
    simulate(failure.seed)  # the real shell passes the same seed
    return failure.invariant


def test_a_member_shell_that_forgets_what_it_installed_while_away(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = joining._Member._local_event

    def forgetful(self: joining._Member, event: ev.Event) -> None:
        if self.conn is not None:  # the bug: downloads made while disconnected are dropped
            real(self, event)

    found = found_only_when_planted(monkeypatch, joining._Member, "_local_event", forgetful)
    assert found == "join-ends-with-the-room"


def test_a_member_shell_that_retries_only_refused_and_closed_connections(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    narrow = (OSError, ConnectionClosed)  # issue 9.5: an end of stream in a handshake is fatal
    found = found_only_when_planted(monkeypatch, joining, "_RETRYABLE", narrow)
    assert found == "join-ends-with-the-room"


def test_a_host_shell_that_sends_frames_before_writing_its_log(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def send_first(self: hosting.RoomHost) -> None:
        while True:
            batch = [await self._outbox.get()]
            while not self._outbox.empty():
                batch.append(self._outbox.get_nowait())
            for out in batch:  # the bug: the frames leave before their events are written
                self._send(out)
                for cid in out.closes:
                    self._close(cid)
            dirty, self._dirty = self._dirty, set()
            await asyncio.gather(*(self.logs[room_id].flush() for room_id in dirty))
            for _ in batch:
                self._outbox.task_done()

    found = found_only_when_planted(monkeypatch, hosting.RoomHost, "_send_forever", send_first)
    assert found == "heard-is-in-the-host-log"
