"""The log store seam: where event logs keep their lines, as a repository of logs by id.

A store sees dumb records: each log is a sequence of lines (bytes ending in ``\\n``), appended
in order and read back from a position. What a line means (the hash chain, the events) belongs
to :mod:`matchlock.core.chain` and :class:`matchlock.store.eventlog.EventLog`, which sit on top; a
store never parses a line, never checks a hash, never folds an event. Imports point one way:
``eventlog`` imports ``store``, never the reverse.

Two interfaces:

- :class:`LogStore`: one log. ``append`` lines (durably when asked: ``append`` returns only once
  they would survive a power loss), ``read`` them from a line index, ``drop_torn`` a last line a
  crash cut short, ``close``.
- :class:`LogRepository`: many logs by id (the room host keeps one per room). ``ids`` lists the
  logs it holds, ``create`` starts a new one, ``store`` opens an existing one (to read or
  continue), ``remove`` deletes one.

Two implementations ship, and both pass one contract test suite (``tests/store/contract.py``):
:class:`~matchlock.store.files.FileRepository` (a directory of ``<id>.log`` JSON Lines files,
the embedded default) and :class:`~matchlock.store.memory.MemoryRepository` (lists in memory,
with a deterministic model of a machine crash, and several writers of a log refused as the NATS
store refuses them, for the simulation). A third,
:class:`~matchlock.store.nats.NatsRepository` (NATS JetStream, a subject per log, appends that
never fork a log shared by several writers), needs the ``nats`` extra and is imported from
:mod:`matchlock.store.nats`, not from here. Adding a store is one module plus a subclass of the
contract suite: see ``docs/adding-a-store.md``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from matchlock.store.files import FileRepository, FileStore
from matchlock.store.memory import MemoryRepository, MemoryStore

__all__ = [
    "FileRepository",
    "FileStore",
    "LogRepository",
    "LogStore",
    "MemoryRepository",
    "MemoryStore",
]


class LogStore(Protocol):
    """One log's lines. Lines are bytes ending in ``\\n``; only a crash leaves a last line
    without it (a torn tail), and only :meth:`drop_torn` removes anything."""

    @property
    def name(self) -> str:
        """Where the log is, for messages (a file's path, ``memory:<id>``)."""
        ...

    async def append(self, lines: Sequence[bytes], durable: bool) -> None:
        """Add ``lines`` at the end, in order. Once it returns, they survive the process; when
        ``durable``, they (and every line before them) also survive the machine."""

    def read(self, start: int = 0) -> Iterator[bytes]:
        """Every line from line index ``start`` (0 is the header), streaming; a torn last line
        as it is. Blocking IO is allowed: async callers run it in a worker thread."""
        ...

    async def drop_torn(self, size: int) -> None:
        """Remove the last ``size`` bytes, a last line a crash cut short (``read`` showed it
        without its ``\\n``). Nothing else is ever removed from a log."""

    async def close(self) -> None:
        """Release what the store holds open (the log stays; it can be opened again)."""


class LogRepository(Protocol):
    """Logs by id (a room's id, for a room host). An id is a safe name (letters, digits,
    ``_ - .``): what :class:`~matchlock.core.config.RoomConfig` allows for a room id."""

    async def ids(self) -> list[str]:
        """The id of every log held, sorted. A log is held from its first append on."""
        ...

    def create(self, log_id: str) -> LogStore:
        """A new, empty log ``log_id``, held once something is appended (no IO before that, so
        synchronous code can create one). Raises :class:`~matchlock.core.errors.UsageError` when a
        log ``log_id`` is already held."""
        ...

    def store(self, log_id: str) -> LogStore:
        """The held log ``log_id``, to read or continue. Raises
        :class:`~matchlock.core.errors.LogError` when there is none."""
        ...

    async def remove(self, log_id: str) -> None:
        """Delete the log ``log_id`` (a log that holds no event, after a crash)."""
