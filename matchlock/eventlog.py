"""The event log on disk (or anywhere): append-only, hash-chained, crash-safe.

:class:`EventLog` turns events into chained lines (:mod:`matchlock.chain`) and hands them to a
:class:`LogStore`, a two-method interface (append lines, read lines from a position) so that a
host can later keep its logs in another store (Redis Streams, NATS JetStream) with no change to
the core. Two stores ship: :class:`FileStore` (``aiofiles``) and :class:`MemoryStore`.

Durability (``durability=``):

- ``"decisions"`` (default): lines are written to the operating system at every append, and the
  file is fsynced when the batch holds a decision (a room or download opened, a member joined,
  refused, done or said goodbye, a piece finished or failed, the room all done, closed or
  aborted). A decision is acknowledged (``append`` returns) only once it is on disk; progress
  lines in between survive a process crash but may be lost with the machine.
- ``"every"``: fsync at every append. ``"none"``: never fsync (tests, simulations).

Appends are batched: :meth:`EventLog.buffer` queues events without IO and :meth:`EventLog.flush`
writes them all with one await (one ``aiofiles`` write costs ~120 us; a batch of 1,000 lines the
same). :meth:`EventLog.append` is buffer + flush.

A crash can tear the last line. :func:`read_events` reports it (``torn``) and returns every whole
event before it; :meth:`EventLog.open` reports it, cuts it off, and continues the chain.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, Protocol

import aiofiles
import aiofiles.os

from matchlock.chain import LogDecoder, LogHeader, TornTail, encode_event, encode_header
from matchlock.errors import IllegalEventError, LogCorruptError, LogError, UsageError
from matchlock.events import Event
from matchlock.room import Room, RoomState

__all__ = [
    "DECISIONS",
    "Durability",
    "EventLog",
    "FileStore",
    "LogContents",
    "LogStore",
    "MemoryStore",
    "read_events",
    "replay_file",
]

logger = logging.getLogger(__name__)

Durability = Literal["decisions", "every", "none"]

DECISIONS = frozenset(
    {
        "room_opened",
        "download_opened",
        "member_joined",
        "member_refused",
        "member_done",
        "member_goodbye",
        "piece_finished",
        "piece_failed",
        "room_all_done",
        "room_closed",
        "room_aborted",
        "download_closed",
    }
)
"""Event types whose loss would lose a decision: the log is fsynced when a batch holds one."""


class LogStore(Protocol):
    """Where a log's lines live. Lines are bytes ending in ``\\n``."""

    async def append(self, lines: Sequence[bytes], durable: bool) -> None:
        """Add ``lines`` at the end; when ``durable``, return only once they are persistent."""

    def read(self, start: int = 0) -> Iterator[bytes]:
        """Every line from line index ``start`` (0 is the header); a torn last line as it is."""


class MemoryStore:
    """A log kept in a list: for embedding, tests and the deterministic simulation."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []

    async def append(self, lines: Sequence[bytes], durable: bool) -> None:
        """Add the lines (always durable: there is nothing to lose them to)."""
        self.lines.extend(lines)

    def read(self, start: int = 0) -> Iterator[bytes]:
        """The lines from ``start``."""
        return iter(self.lines[start:])


class FileStore:
    """A log in a JSON Lines file, appended with ``aiofiles``.

    The file is unbuffered: each append is one write straight to the operating system (one hop
    to aiofiles' thread; a buffered file would need a second one to flush), so what was
    appended survives the process, and fsync adds the machine."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: aiofiles.threadpool.binary.AsyncFileIO | None = None

    async def append(self, lines: Sequence[bytes], durable: bool) -> None:
        """Append the lines with one write (more only if the OS takes part of them); fsync
        when ``durable``."""
        if self._file is None:
            self._file = await aiofiles.open(self.path, "ab", buffering=0)
        data = memoryview(b"".join(lines))
        while data:
            written = await self._file.write(data)
            if not written:
                raise OSError(f"{self.path}: the file took none of {len(data)} bytes")
            data = data[written:]
        if durable:
            await asyncio.to_thread(os.fsync, self._file.fileno())

    def read(self, start: int = 0) -> Iterator[bytes]:
        """The file's lines from ``start``."""
        with self.path.open("rb") as file:
            for index, line in enumerate(file):
                if index >= start:
                    yield line

    async def truncate(self, size: int) -> None:
        """Cut the file to ``size`` bytes (to drop a torn tail)."""
        await asyncio.to_thread(os.truncate, self.path, size)

    async def close(self) -> None:
        """Close the file if it is open."""
        if self._file is not None:
            await self._file.close()
            self._file = None


@dataclass(frozen=True)
class LogContents:
    """What a log holds: its header, every whole event, and the torn tail if there was one."""

    header: LogHeader
    events: list[Event]
    torn: TornTail | None
    last_hash: str


def _decoder(path: Path) -> tuple[LogDecoder, Iterator[Event]]:
    if not path.is_file():
        raise LogError(f"{path}: no such log file")
    decoder = LogDecoder(str(path))
    return decoder, decoder.events(FileStore(path).read())


def read_events(path: Path | str) -> LogContents:
    """Read and check a log file; raises :class:`~matchlock.errors.LogCorruptError` naming the
    first bad line. A torn last line is reported in ``torn``, never raised."""
    decoder, events = _decoder(Path(path))
    listed = list(events)
    assert decoder.header is not None  # events() raises before yielding without one
    return LogContents(decoder.header, listed, decoder.torn, decoder.last_hash)


@dataclass(frozen=True)
class Replayed:
    """A log folded to its state: the state, the header, the torn tail, the last line's hash."""

    state: RoomState
    header: LogHeader
    torn: TornTail | None
    last_hash: str


def replay_file(
    path: Path | str,
    until: int | None = None,
    on_event: Callable[[int, Event], None] | None = None,
) -> Replayed:
    """Check a log file and fold it into its state, streaming (memory flat in the log's length).

    ``until`` stops after the event with that sequence number; ``on_event(seq, event)`` sees each
    event folded. A bad line or an event illegal in the state it meets raises
    :class:`~matchlock.errors.LogCorruptError` naming the line.
    """
    path = Path(path)
    decoder, events = _decoder(path)
    room = Room()
    apply = room.apply
    for seq, event in enumerate(events, start=1):
        try:
            apply(event)
        except IllegalEventError as error:
            raise LogCorruptError(str(path), seq + 1, f"illegal event: {error}") from None
        if on_event is not None:
            on_event(seq, event)
        if seq == until:
            break
    assert decoder.header is not None
    return Replayed(room.snapshot(), decoder.header, decoder.torn, decoder.last_hash)


class EventLog:
    """An open log being appended to. Create one with :meth:`create` or :meth:`open`."""

    def __init__(self, store: LogStore, seq: int, last_hash: str, durability: Durability) -> None:
        self.store = store
        self.seq = seq
        self.last_hash = last_hash
        self.durability: Durability = durability
        self._pending: list[bytes] = []
        self._pending_decision = False
        self._writing = asyncio.Lock()  # one write at a time: lines reach the store in order

    @classmethod
    def new(cls, store: LogStore, stream: str, durability: Durability = "decisions") -> EventLog:
        """A new log of ``stream`` in an empty ``store``. No IO: the header is buffered and
        written by the first :meth:`flush` (so a new log can be made inside synchronous code)."""
        header, digest = encode_header(stream)
        log = cls(store, 0, digest, durability)
        log._pending.append(header)
        log._pending_decision = True
        return log

    @classmethod
    def start(cls, path: Path | str, stream: str, durability: Durability = "decisions") -> EventLog:
        """:meth:`new` in a file at ``path``, which must not exist (its folder is created)."""
        path = Path(path)
        if path.exists():
            raise UsageError(f"{path}: a log already exists there; open it to continue it")
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls.new(FileStore(path), stream, durability)

    @classmethod
    async def create(
        cls, path: Path | str, stream: str, durability: Durability = "decisions"
    ) -> EventLog:
        """:meth:`start`, with the header written (and durable unless ``durability`` is
        ``none``) before returning."""
        log = cls.start(path, stream, durability)
        await log.flush()
        return log

    @classmethod
    def in_memory(cls, stream: str) -> EventLog:
        """A new log kept in a :class:`MemoryStore` (``log.store.lines``, once flushed)."""
        return cls.new(MemoryStore(), stream, "none")

    @classmethod
    async def open(
        cls, path: Path | str, durability: Durability = "decisions"
    ) -> tuple[EventLog, list[Event]]:
        """Continue an existing log file: check it, cut off a torn tail (logged as a warning),
        and return the log with every event it holds (to rebuild the state from)."""
        path = Path(path)
        contents = await asyncio.to_thread(read_events, path)
        store = FileStore(path)
        if contents.torn is not None:
            size = (await aiofiles.os.stat(path)).st_size - contents.torn.size
            logger.warning(
                "%s: line %d was torn by a crash (%d bytes); recovered to the last whole event",
                path,
                contents.torn.line,
                contents.torn.size,
            )
            await store.truncate(size)
        log = cls(store, len(contents.events), contents.last_hash, durability)
        return log, contents.events

    def buffer(self, *events: Event) -> None:
        """Chain ``events`` onto the log without writing them yet (see :meth:`flush`)."""
        for event in events:
            self.buffer_json(event, None)

    def buffer_json(self, event: Event, body: bytes | None) -> None:
        """:meth:`buffer` one event whose JSON (``EventAdapter.dump_json(event)``) the caller
        already made, so it is not made twice (the room host relays the same bytes)."""
        self.seq += 1
        line, self.last_hash = encode_event(self.seq, self.last_hash, event, body)
        self._pending.append(line)
        self._pending_decision = self._pending_decision or event.type in DECISIONS

    async def flush(self) -> None:
        """Write every buffered line with one await, durably when the policy says so."""
        async with self._writing:
            decision = self._pending_decision
            lines = self.take()
            if lines:
                durable = self.durability == "every" or (
                    self.durability == "decisions" and decision
                )
                await self.store.append(lines, durable=durable)

    def take(self) -> list[bytes]:
        """The buffered lines, handed over instead of written (a synchronous caller, such as
        the simulation, stores them itself); the log then holds nothing buffered."""
        lines, self._pending, self._pending_decision = self._pending, [], False
        return lines

    async def append(self, *events: Event) -> int:
        """Append ``events`` (one write); returns the sequence number of the last one."""
        self.buffer(*events)
        await self.flush()
        return self.seq

    async def close(self) -> None:
        """Flush what is buffered and close the file."""
        await self.flush()
        if isinstance(self.store, FileStore):
            await self.store.close()

    async def __aenter__(self) -> EventLog:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
