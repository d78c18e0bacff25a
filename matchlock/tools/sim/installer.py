"""The simulated download engine: an :data:`~matchlock.app.joining.Installer` whose resolvables
succeed, fail, stall or serve corrupt bytes as the seed decides, in virtual time.

:func:`matchlock.app.joining.join` takes it as ``install=``, and gets from it exactly the piece
events the real engine (:mod:`matchlock.downloads`) emits, in the same order: ``piece_started``;
``piece_finished`` from the cache when an earlier run of this member installed the piece
(sometimes after a ``folder_rejected`` for a cache folder that does not verify, then a fresh
install); otherwise, per resolvable, ``piece_progress`` now and then and a
``resolvable_failed`` or the ``piece_finished``; ``piece_failed`` when every resolvable failed
(and then :class:`~matchlock.downloads.DownloadError`, as the engine raises it).

What a member installed survives its process (``cache``), as a real cache on disk does. The
plan of every attempt is drawn when it starts, so whether a member can get its content at all
is known in advance (:attr:`SimInstaller.obtainable`): only then must its room complete.

It never touches a file: folders are paths nobody opens. It must never read the real clock.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from matchlock.core import events as ev
from matchlock.core.config import RoomConfig
from matchlock.downloads import DownloadError

__all__ = ["SimInstaller"]

OUTCOMES = ("ok", "fail", "stall", "corrupt")
"""What one resolvable does."""


class SimInstaller:
    """One member's downloads (across its process restarts), events stamped by ``clock``.
    ``faults``: whether resolvables may misbehave; ``attempts``: the install calls a member
    makes for one piece (1 + ``join``'s retries)."""

    def __init__(
        self,
        rng: random.Random,
        room: RoomConfig,
        user_id: str,
        clock: Callable[[], float],
        *,
        faults: bool,
        attempts: int,
    ) -> None:
        self.rng = rng
        self.clock = clock
        self.room = room
        self.user_id = user_id
        self.faults = faults
        self.cache: dict[str, Path] = {}
        self.rejected: set[str] = set()  # cache folders that a crash left unverifiable
        # The last attempt's plan of each piece ends well unless the seed says the piece cannot
        # be had at all (rare): then the room cannot complete, and nobody must wait forever.
        self.hopeless = {key for key in room.piece_keys() if faults and self.rng.random() < 0.01}
        self.attempts = attempts
        self.calls: dict[str, int] = {}

    def reject_one(self) -> None:
        """A crash left one cached folder that no longer verifies (a half-written file)."""
        if self.cache:
            self.rejected.add(self.rng.choice(sorted(self.cache)))

    @property
    def obtainable(self) -> bool:
        """Whether every piece can be had."""
        return not self.hopeless

    def folder(self, key: str) -> Path:
        """Where ``key`` is installed: content-addressed, the same for every member."""
        return Path(PurePosixPath("/sim-cache") / self.room.content[key].content_digest[:16] / key)

    async def __call__(self, keys: list[str], emit: Callable[[ev.Event], None]) -> dict[str, Path]:
        """Install ``keys`` concurrently, telling ``emit`` every piece event."""
        results = await asyncio.gather(*(self._piece(key, emit) for key in keys))
        folders = {
            key: folder
            for key, (folder, _) in zip(keys, results, strict=True)
            if folder is not None
        }
        failures = {
            key: why for key, (folder, why) in zip(keys, results, strict=True) if folder is None
        }
        if failures:
            raise DownloadError(failures, folders)
        return folders

    async def _piece(
        self, key: str, emit: Callable[[ev.Event], None]
    ) -> tuple[Path | None, tuple[ev.ResolvableFailure, ...]]:
        user = self.user_id
        emit(ev.PieceStarted(at=self.clock(), user_id=user, piece=key))
        await self._pause()
        if key in self.cache:
            if key not in self.rejected:
                emit(ev.PieceFinished(at=self.clock(), user_id=user, piece=key, source="cache"))
                return self.cache[key], ()
            self.rejected.discard(key)
            folder, reason = str(self.cache[key]), "its digest differs from the one at install"
            emit(ev.FolderRejected(
                at=self.clock(), user_id=user, piece=key, folder=folder, where="cache",
                reason=reason,
            ))  # fmt: skip
        failures: list[ev.ResolvableFailure] = []
        for index, outcome in enumerate(self._plan(key)):
            url = f"https://mirror-{index}.example/{key}"
            why = await self._resolvable(key, outcome, emit)
            if why is None:
                self.cache[key] = self.folder(key)
                emit(ev.PieceFinished(at=self.clock(), user_id=user, piece=key, source=url))
                return self.cache[key], ()
            failure = ev.ResolvableFailure(index=index, url=url, reason=why)
            failures.append(failure)
            emit(ev.ResolvableFailed(at=self.clock(), user_id=user, piece=key, failure=failure))
        emit(ev.PieceFailed(at=self.clock(), user_id=user, piece=key, failures=tuple(failures)))
        return None, tuple(failures)

    def _plan(self, key: str) -> list[str]:
        """The outcome of each resolvable for this attempt at ``key``."""
        call = self.calls[key] = self.calls.get(key, 0) + 1
        if not self.faults:
            return ["ok"]
        plan = [self.rng.choice(OUTCOMES) for _ in range(self.rng.randint(1, 3))]
        if call >= self.attempts:  # the last chance: it ends well unless the piece is hopeless
            plan[-1] = "fail" if key in self.hopeless else "ok"
        return plan

    async def _resolvable(
        self, key: str, outcome: str, emit: Callable[[ev.Event], None]
    ) -> str | None:
        """One resolvable: None when it yielded the piece, else why not."""
        size = self.room.content[key].content_size
        if outcome == "fail":
            await self._pause()
            return "HTTP 404 Not Found"
        if outcome == "stall":
            await asyncio.sleep(self.rng.uniform(0.1, 0.5))
            return "no data for 30 s"
        done = 0
        while done < size:
            await self._pause()
            done = min(size, done + max(1, size // self.rng.randint(1, 4)))
            emit(ev.PieceProgress(at=self.clock(), user_id=self.user_id, piece=key, done=done))
        await self._pause()
        return "sha256 mismatch (the mirror serves other bytes)" if outcome == "corrupt" else None

    async def _pause(self) -> None:
        await asyncio.sleep(self.rng.uniform(0.0, 0.03))
