"""A deterministic asyncio event loop with virtual time, and the simulated processes in it.

:class:`VirtualLoop` is an ordinary :class:`asyncio.BaseEventLoop` whose clock is a number it
keeps: when no callback is ready it does not sleep but jumps to the next scheduled timer, so a
simulated minute passes in microseconds and no real clock is ever read. It has no selector, no
threads and no executor: what code sends to a worker thread (``asyncio.to_thread``, as a log
store's blocking read) runs at once, inline, in the loop's own thread
(:meth:`VirtualLoop.run_in_executor`). The real code that runs in it (``RoomHost``, ``join``)
must reach the world only through what the simulation injects (an in-memory network, an
in-memory disk, a seeded installer): nothing it runs inline may block on a real file or
socket. With the ready queue FIFO and every
choice taken from the seed's generator, a seed gives the same run, byte for byte.

A :class:`Process` is a named group of tasks standing for one operating-system process (the
host, a member): every task created while a process's context is current belongs to it, and
:meth:`Process.kill` cancels them all at once, in creation order, as SIGKILL would end them. A
killed process's code may still run its ``finally`` blocks; the network and the disk it used
refuse it from the instant of its death (:attr:`Process.alive`), so nothing it does after
dying reaches the rest of the world.

This module must never read the real clock, start a thread, or open a socket or a file.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["CURRENT", "Process", "SimulationStuck", "VirtualLoop"]

T = TypeVar("T")


class SimulationStuck(Exception):
    """Every task waits for something no timer will ever bring: the simulated world is
    deadlocked (a bug, or a test that waits for nothing)."""


class _NoSelector:
    """Stands where a selector would: there is no IO to wait for, only time to advance."""

    def __init__(self, loop: VirtualLoop) -> None:
        self._loop = loop

    def select(self, timeout: float | None) -> list[Any]:
        if timeout is None:
            raise SimulationStuck(f"nothing is ready or scheduled at t={self._loop.time():.3f}")
        self._loop.advance(timeout)
        return []

    def close(self) -> None:
        """Nothing to release."""


class VirtualLoop(asyncio.BaseEventLoop):
    """An event loop on virtual time (seconds from 0): see the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self._now = 0.0
        self._selector = _NoSelector(self)
        self._clock_resolution = 1e-9

    def time(self) -> float:
        """The virtual time, in seconds."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward (the loop does so itself when it has nothing else to do)."""
        self._now += max(0.0, seconds)

    def create_task(  # type: ignore[override]
        self,
        coro: Coroutine[Any, Any, T],
        *,
        name: str | None = None,
        context: contextvars.Context | None = None,
    ) -> asyncio.Task[T]:
        """A task, enrolled in the process whose context it is created in."""
        task = super().create_task(coro, name=name, context=context)
        process = (context or contextvars.copy_context()).get(CURRENT)
        if process is not None:
            if len(process.tasks) > 64:  # forget the tasks that ended
                process.tasks = [known for known in process.tasks if not known.done()]
            process.tasks.append(task)
        return task

    def run_in_executor(  # type: ignore[override]
        self, executor: Any, func: Callable[..., T], *args: Any
    ) -> asyncio.Future[T]:
        """Run ``func`` now, in this thread, and return its outcome as a done future (a thread
        would make the run nondeterministic)."""
        future: asyncio.Future[T] = self.create_future()
        try:
            future.set_result(func(*args))
        except Exception as error:  # the caller awaits it, as from a thread
            future.set_exception(error)
        return future

    def _process_events(self, event_list: list[Any]) -> None:
        """No IO events ever arrive."""

    def _write_to_self(self) -> None:
        """Nothing to wake: the loop never sleeps."""


class Process:
    """A simulated operating-system process: a name, whether it lives, and its tasks."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.alive = True
        self.tasks: list[asyncio.Task[Any]] = []
        self.context = contextvars.copy_context()
        self.context.run(CURRENT.set, self)

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Start ``coro`` as a task of this process."""
        return asyncio.get_running_loop().create_task(coro, context=self.context)

    def kill(self) -> None:
        """End the process at once: it is dead for the world, and every task it has is
        cancelled, oldest first."""
        self.alive = False
        for task in self.tasks:
            task.cancel()
        self.tasks = [task for task in self.tasks if not task.done()]

    def __repr__(self) -> str:
        return f"Process({self.name!r}, alive={self.alive})"


CURRENT: contextvars.ContextVar[Process | None] = contextvars.ContextVar(
    "matchlock_sim_process", default=None
)
"""The simulated process whose code is running (None: the simulator itself)."""
