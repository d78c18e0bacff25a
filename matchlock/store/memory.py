"""Logs in memory, with a deterministic model of a machine crash: for embedding, tests and the
simulation.

A :class:`MemoryStore` holds a log's lines as a list, and remembers how many of its bytes the
last durable append made safe (what a file's ``fsync`` would have put on the disk). Two kinds of
crash, the same as a real log file on a real machine:

- **a process crash** loses nothing the store was given: every appended line stays, as in the
  operating system's cache of a file. There is nothing to call; open the store again.
- **a machine crash** (power loss), :meth:`MemoryStore.crash` or, for every log at once,
  :meth:`MemoryRepository.crash`: the bytes appended since the last durable append are
  ``unsynced``; the caller chooses how many of them survive (``0 <= survive <= unsynced``), the
  first ones in order, so the last surviving write may end at any byte, inside a line or inside
  the header. What came before the last durable append always survives.

The model keeps a prefix (a log is appended in order, and this is what a journaling file system
such as ext4 in its default mode leaves). Damage a file system could do beyond a prefix (zeroed
or reordered blocks) is not modelled; a reader would report such a log as damaged, not torn.

**Several writers, no fork**, as :class:`~matchlock.store.nats.NatsRepository` gives hosts that
share a log: each :meth:`MemoryRepository.create` and :meth:`MemoryRepository.store` hands out a
writer of its own (a :class:`MemoryStore` sharing the log's lines), which remembers where the
log ended when it last read (to the end) or wrote it (:attr:`MemoryStore.last`, in lines). An
append that finds the log longer (another writer appended in between) is refused whole with
:class:`~matchlock.core.errors.LogConflictError`, nothing of it stored: two writers can never
both append at one position. The writers of a log that was removed are refused; a log made
again under its id is a new log. A single writer, the only kind a file has, never conflicts.

This module moves bytes; it must never parse or check a line, never resolve a conflict (it is
reported to the writer, who reads the log again and decides anew), and never read a clock or a
random generator: whoever simulates the crash chooses ``survive``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Sequence

from matchlock.core.errors import LogConflictError, LogError, UsageError

__all__ = ["MemoryRepository", "MemoryStore"]


class _Log:
    """One log's lines, shared by its writers."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.appended = False  # as a file exists from its first append on
        self.durable = 0  # bytes of ``lines`` that a machine crash cannot take
        self.removed = False
        self.writers: weakref.WeakSet[MemoryStore] = weakref.WeakSet()


class MemoryStore:
    """A log kept in a list of lines (``lines``), with the durable point of a real file; one
    writer of it (a new store is a new log; :meth:`writer` gives another writer of this one).
    ``last`` is the number of lines the log held when this writer last read it to the end or
    appended to it: the next append must find the log ending there."""

    def __init__(self, name: str = "memory", *, log: _Log | None = None, last: int = 0) -> None:
        self._name = name
        self._log = _Log() if log is None else log
        self._log.writers.add(self)
        self.last = last

    def writer(self, *, at_end: bool) -> MemoryStore:
        """Another writer of this log: expecting it to end where it ends now (``at_end``, as
        a writer that just read it), or empty (a writer creating it)."""
        return MemoryStore(self._name, log=self._log, last=len(self.lines) if at_end else 0)

    @property
    def lines(self) -> list[bytes]:
        """The log's lines (the same list for every writer of the log)."""
        return self._log.lines

    @property
    def appended(self) -> bool:
        """Whether anything was appended (as a file exists from its first append on)."""
        return self._log.appended

    @property
    def name(self) -> str:
        """The name given at creation (``memory:<id>`` in a :class:`MemoryRepository`)."""
        return self._name

    @property
    def size(self) -> int:
        """The bytes the log holds."""
        return sum(map(len, self.lines))

    @property
    def unsynced(self) -> int:
        """The bytes appended since the last durable append: what a machine crash may lose."""
        return self.size - self._log.durable

    async def append(self, lines: Sequence[bytes], durable: bool) -> None:
        """Add the lines; when ``durable``, every byte held so far survives :meth:`crash`.
        Raises :class:`~matchlock.core.errors.LogConflictError`, storing nothing, when the log
        no longer ends at :attr:`last` (another writer appended)."""
        log = self._log
        if log.removed:
            raise LogConflictError(self._name, self.last, "the log was removed")
        if len(log.lines) != self.last:
            why = f"the log holds {len(log.lines)} lines, this writer knew of {self.last}"
            raise LogConflictError(self._name, self.last, why)
        log.lines.extend(line for line in lines if line)  # a file holds no empty line either
        log.appended = True
        self.last = len(log.lines)
        if durable:
            log.durable = self.size

    def read(self, start: int = 0) -> Iterator[bytes]:
        """The lines from ``start`` that the log holds now; once read to the end, the next
        append continues after them (:attr:`last`)."""
        held = self.lines[start:]
        end = len(self.lines)

        def lines() -> Iterator[bytes]:
            yield from held
            self.last = end

        return lines()

    async def drop_torn(self, size: int) -> None:
        """Remove the torn last line, ``size`` bytes long."""
        if not size:
            return
        if not self.lines or self.lines[-1].endswith(b"\n") or len(self.lines[-1]) != size:
            raise UsageError(f"{self._name}: the last line is not a torn line of {size} bytes")
        del self.lines[-1]
        self._log.durable = min(self._log.durable, self.size)
        self.last = len(self.lines)

    async def close(self) -> None:
        """Nothing to release."""

    def crash(self, survive: int) -> None:
        """The machine lost power: keep what the last durable append made safe and the first
        ``survive`` of the :attr:`unsynced` bytes after it; lose the rest. The log then ends
        wherever that cut falls (mid-line: a torn tail; mid-header: a torn header; at 0 bytes:
        an empty log). ``crash(unsynced)`` loses nothing, ``crash(0)`` all that is unsynced.
        Deterministic: the caller (a seeded simulation) chooses ``survive``."""
        if not 0 <= survive <= self.unsynced:
            raise UsageError(f"{self._name}: survive={survive} is outside 0..{self.unsynced}")
        log = self._log
        kept = b"".join(log.lines)[: log.durable + survive]
        log.lines[:] = kept.splitlines(keepends=True)
        log.durable = len(kept)
        for writer in log.writers:  # as a file's writers append at its end after a reboot
            writer.last = min(writer.last, len(log.lines))

    def forget(self) -> None:
        """The log was removed: its writers' appends are refused from now on."""
        self._log.removed = True


class MemoryRepository:
    """Logs by id, each a :class:`MemoryStore` (``stores``, to look at and to crash); every
    :meth:`create` and :meth:`store` is a writer of its own (see the module's docs)."""

    def __init__(self) -> None:
        self.stores: dict[str, MemoryStore] = {}

    async def ids(self) -> list[str]:
        """The id of every log appended to at least once, sorted."""
        return sorted(log_id for log_id, store in self.stores.items() if store.appended)

    def create(self, log_id: str) -> MemoryStore:
        """A new, empty log ``log_id`` (named ``memory:<log_id>``), held from its first append;
        a writer that creates it meanwhile makes that append conflict."""
        held = self.stores.get(log_id)
        if held is None:
            held = self.stores[log_id] = MemoryStore(f"memory:{log_id}")
        elif held.appended:
            raise UsageError(f"{held.name}: a log already exists there; open it to continue it")
        return held.writer(at_end=False)

    def store(self, log_id: str) -> MemoryStore:
        """The held log ``log_id``, continuing after its last line now."""
        held = self.stores.get(log_id)
        if held is None or not held.appended:
            raise LogError(f"memory:{log_id}: no such log")
        return held.writer(at_end=True)

    async def remove(self, log_id: str) -> None:
        """Remove the log ``log_id`` (the id is free again; its writers are refused)."""
        self.stores.pop(log_id).forget()

    def crash(self, survive: Callable[[str, int], int]) -> None:
        """The machine lost power: for every log, in id order, ``survive(log_id, unsynced)``
        says how many of its unsynced bytes survive (see :meth:`MemoryStore.crash`); for
        example ``repo.crash(lambda _, unsynced: rng.randint(0, unsynced))`` with a seeded
        ``rng``. A process crash needs no call: every appended line stays."""
        for log_id in sorted(self.stores):
            store = self.stores[log_id]
            store.crash(survive(log_id, store.unsynced))
