"""Room events as an async iterator: :func:`join_events` runs :func:`matchlock.join` and hands
every room event to an ``async for`` loop, for callers that would rather iterate than pass a
callback.

::

    async with matchlock.join_events(url, room=room, user_id="alice", ...) as events:
        async for event in events:
            show(event)
    folders = events.folders        # {"collection/piece": folder}, once the room has closed

The join runs in its own task from ``async with`` on; events queue up until read (a room's
events are bounded by the host, so the queue is too). The loop ends when the join does: the
result is then in :attr:`RoomEvents.folders`, and a join that failed raises its error
(:class:`~matchlock.core.errors.JoinRefusedError`,
:class:`~matchlock.core.errors.RoomIncompleteError`, ...) from the loop. Leaving the ``async with``
early cancels the join.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Any

from matchlock.app.joining import join
from matchlock.core import events as ev
from matchlock.core.errors import UsageError

__all__ = ["RoomEvents", "join_events"]


class RoomEvents:
    """The events of one join, in order, and its result once it has ended."""

    def __init__(self, url: str, options: dict[str, Any]) -> None:
        if "on_event" in options:
            raise UsageError("join_events() hands every event to the loop: pass no on_event")
        self._url, self._options = url, options
        self._queue: asyncio.Queue[ev.Event | None] = asyncio.Queue()
        self._task: asyncio.Task[dict[str, Path]] | None = None

    async def __aenter__(self) -> RoomEvents:
        self._task = asyncio.create_task(
            join(self._url, on_event=self._queue.put_nowait, **self._options)
        )
        self._task.add_done_callback(lambda _: self._queue.put_nowait(None))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def __aiter__(self) -> AsyncIterator[ev.Event]:
        return self._events()

    async def _events(self) -> AsyncIterator[ev.Event]:
        if self._task is None:
            raise UsageError("iterate join_events() inside `async with`")
        while (event := await self._queue.get()) is not None:
            yield event
        self._task.result()  # the join's error, if it failed

    @property
    def folders(self) -> dict[str, Path]:
        """``{"collection/piece": folder}``: available once the loop has ended."""
        if self._task is None or not self._task.done():
            raise UsageError("the join has not ended yet: read every event first")
        return self._task.result()


def join_events(url: str, **options: Any) -> RoomEvents:
    """:func:`matchlock.join` with its events as an async iterator (see the module docstring);
    ``options`` are :func:`~matchlock.join`'s keyword arguments, but ``on_event``."""
    return RoomEvents(url, options)
