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

This module moves bytes; it must never parse or check a line, and never read a clock or a
random generator: whoever simulates the crash chooses ``survive``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from matchlock.core.errors import LogError, UsageError

__all__ = ["MemoryRepository", "MemoryStore"]


class MemoryStore:
    """A log kept in a list of lines (``lines``), with the durable point of a real file."""

    def __init__(self, name: str = "memory") -> None:
        self._name = name
        self.lines: list[bytes] = []
        self.appended = False  # as a file exists from its first append on
        self._durable = 0  # bytes of ``lines`` that a machine crash cannot take

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
        return self.size - self._durable

    async def append(self, lines: Sequence[bytes], durable: bool) -> None:
        """Add the lines; when ``durable``, every byte held so far survives :meth:`crash`."""
        self.lines.extend(line for line in lines if line)  # a file holds no empty line either
        self.appended = True
        if durable:
            self._durable = self.size

    def read(self, start: int = 0) -> Iterator[bytes]:
        """The lines from ``start``."""
        return iter(self.lines[start:])

    async def drop_torn(self, size: int) -> None:
        """Remove the torn last line, ``size`` bytes long."""
        if not size:
            return
        if not self.lines or self.lines[-1].endswith(b"\n") or len(self.lines[-1]) != size:
            raise UsageError(f"{self._name}: the last line is not a torn line of {size} bytes")
        del self.lines[-1]
        self._durable = min(self._durable, self.size)

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
        kept = b"".join(self.lines)[: self._durable + survive]
        self.lines = kept.splitlines(keepends=True)
        self._durable = len(kept)


class MemoryRepository:
    """Logs by id, each a :class:`MemoryStore` (``stores``)."""

    def __init__(self) -> None:
        self.stores: dict[str, MemoryStore] = {}

    async def ids(self) -> list[str]:
        """The id of every log appended to at least once, sorted."""
        return sorted(log_id for log_id, store in self.stores.items() if store.appended)

    def create(self, log_id: str) -> MemoryStore:
        """A new, empty log ``log_id`` (named ``memory:<log_id>``)."""
        held = self.stores.get(log_id)
        if held is not None and held.appended:
            raise UsageError(f"{held.name}: a log already exists there; open it to continue it")
        store = self.stores[log_id] = MemoryStore(f"memory:{log_id}")
        return store

    def store(self, log_id: str) -> MemoryStore:
        """The held log ``log_id``."""
        held = self.stores.get(log_id)
        if held is None or not held.appended:
            raise LogError(f"memory:{log_id}: no such log")
        return held

    async def remove(self, log_id: str) -> None:
        """Forget the log ``log_id``."""
        del self.stores[log_id]

    def crash(self, survive: Callable[[str, int], int]) -> None:
        """The machine lost power: for every log, in id order, ``survive(log_id, unsynced)``
        says how many of its unsynced bytes survive (see :meth:`MemoryStore.crash`); for
        example ``repo.crash(lambda _, unsynced: rng.randint(0, unsynced))`` with a seeded
        ``rng``. A process crash needs no call: every appended line stays."""
        for log_id in sorted(self.stores):
            store = self.stores[log_id]
            store.crash(survive(log_id, store.unsynced))
