"""The order in which one piece's sources are tried, and its coalesced progress.

:func:`piece_sources` lists a piece's sources (its resolvables, and ``room:`` where the job puts
the room); :class:`Turns` hands them out in order, each once, then those that failed transiently
again (see the class); :class:`ProgressReporter` turns "bytes so far" into at most about a
hundred progress events per source. Pure bookkeeping: it only sleeps for a pause.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Literal

from matchlock.core.config import Piece, RoomSource
from matchlock.downloads.resolvers import FetchPolicy, HostUnreachable, ResolveFailed, Transient
from matchlock.downloads.resolvers.room import ROOM_URL

__all__ = ["PROGRESS_STEP_MIN", "FinalFailure", "ProgressReporter", "Turns", "piece_sources"]

PROGRESS_STEP_MIN = 256 * 1024
"""The fewest new bytes that justify a progress event."""


def piece_sources(piece: Piece, room_source: RoomSource) -> list[tuple[int, str]]:
    """The sources of ``piece`` in the order they are tried, each with its index (a
    resolvable's place in the config; the room's is the number of resolvables)."""
    urls = [(index, r.url) for index, r in enumerate(piece.resolvables)]
    room = (len(urls), ROOM_URL)
    if room_source == "first":
        return [room, *urls]
    return [*urls, room] if room_source == "last" else urls


class FinalFailure(ResolveFailed):
    """A failure that no other resolvable can mend (a local error, unusable verified bytes)."""


Again = Literal["at_once", "later", "never", "stop"]
"""What :meth:`Turns.failed` decided: retry now (nothing else is left), retry after the other
resolvables, never again, or stop trying this piece altogether."""


class Turns:
    """The order in which one piece's resolvables are tried.

    Each resolvable is tried once, in the config's order. The failure's type decides the rest
    (:mod:`matchlock.downloads.resolvers.base`): one that is :class:`Transient` goes to the back
    of the line, to be tried again only after every resolvable before it in the line, up to
    ``policy.attempts`` requests in all; its pause (:meth:`FetchPolicy.pause`) runs from its
    failure, so time spent on the others counts. One that is :class:`HostUnreachable`, or any
    other failure, is not tried again; a failure every resolvable would share
    (:class:`FinalFailure`) stops the piece.
    """

    def __init__(self, count: int, policy: FetchPolicy) -> None:
        self.attempts = policy.attempts
        self._policy = policy
        self._line: deque[int] = deque(range(count))
        self._tries = [0] * count
        self._due = [0.0] * count
        self._loop = asyncio.get_running_loop()

    async def next(self) -> int | None:
        """The next resolvable to try (after its pause), or None when none is left."""
        if not self._line:
            return None
        index = self._line.popleft()
        wait = self._due[index] - self._loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        return index

    def left(self) -> int:
        """How many turns are waiting after the one :meth:`next` gave."""
        return len(self._line)

    def tries(self, index: int) -> int:
        """Requests made so far to resolvable ``index``."""
        return self._tries[index]

    def failed(self, index: int, failure: ResolveFailed) -> Again:
        """Record that ``index`` failed; say whether and when it will be tried again."""
        self._tries[index] += 1
        if isinstance(failure, FinalFailure):
            self._line.clear()
            return "stop"
        if isinstance(failure, HostUnreachable):
            return "never"  # and every resolvable on its host is skipped (hosts.py)
        if not isinstance(failure, Transient) or self._tries[index] >= self.attempts:
            return "never"
        self._due[index] = self._loop.time() + self._policy.pause(self._tries[index] - 1)
        self._line.append(index)
        return "at_once" if len(self._line) == 1 else "later"


class ProgressReporter:
    """Turns "bytes so far" into coalesced :class:`PieceProgress` events (see module docs)."""

    def __init__(self, emit: Callable[[int], None], size: int) -> None:
        self._emit = emit
        self._step = max(size // 100, PROGRESS_STEP_MIN)
        self._reported = 0

    def __call__(self, done: int) -> None:
        if done >= self._reported + self._step:
            self._reported = done
            self._emit(done)
