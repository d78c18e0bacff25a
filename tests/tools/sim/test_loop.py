"""The virtual-time loop: time jumps to the next timer, nothing runs in a thread, a deadlock is
named, and a killed process's tasks are all cancelled."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from matchlock.tools.sim.loop import CURRENT, Process, SimulationStuck, VirtualLoop

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> tuple[T, float]:
    loop = VirtualLoop()
    try:
        return loop.run_until_complete(coro), loop.time()
    finally:
        loop.close()


def test_an_hour_of_sleeps_and_timeouts_pass_in_virtual_time() -> None:
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        seen = []
        await asyncio.sleep(3600)
        seen.append(loop.time())
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.Event().wait(), 5)
        seen.append(loop.time())
        return seen

    seen, end = run(main())
    assert seen == [3600.0, 3605.0] and end == 3605.0


def test_work_sent_to_a_thread_runs_inline_in_the_loops_thread() -> None:
    async def main() -> int:
        return await asyncio.to_thread(threading.get_ident)

    ident, _ = run(main())
    assert ident == threading.get_ident()


def test_waiting_for_what_never_comes_is_named() -> None:
    async def main() -> None:
        await asyncio.Event().wait()

    with pytest.raises(SimulationStuck, match=r"nothing is ready or scheduled at t=0\.000"):
        run(main())


def test_killing_a_process_cancels_every_task_it_started() -> None:
    async def main() -> tuple[list[str], bool]:
        process = Process("host-1")
        ended: list[str] = []

        async def child(name: str) -> None:
            try:
                await asyncio.sleep(10)
            finally:
                ended.append(name)

        async def parent() -> None:
            assert CURRENT.get() is process
            asyncio.get_running_loop().create_task(child("grandchild"))  # enrolled too
            await child("child")

        process.spawn(parent())
        bystander = asyncio.get_running_loop().create_task(asyncio.sleep(20))
        await asyncio.sleep(1)
        process.kill()
        await asyncio.sleep(1)
        done = bystander.done()
        bystander.cancel()
        return ended, done

    (ended, bystander_done), _ = run(main())
    assert sorted(ended) == ["child", "grandchild"] and not bystander_done
