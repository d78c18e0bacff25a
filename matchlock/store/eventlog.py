"""The event log on disk (or anywhere): append-only, hash-chained, crash-safe.

:class:`EventLog` turns events into chained lines (:mod:`matchlock.core.chain`) and hands them to a
:class:`~matchlock.store.LogStore`, which only keeps lines (append, read from a position, drop a
torn last line), so that a host can keep its logs in another store (NATS JetStream, say) with
no change to the core. The stores, and the repositories of logs by id that a room host keeps,
are in :mod:`matchlock.store`: files (the default), memory and NATS JetStream.

Durability (``durability=``; what each guarantees across a process crash and a power loss is
in ``docs/durability.md``):

- ``"decisions"`` (default): lines are written to the operating system at every append, and the
  file is fsynced when the batch holds a decision (a room or download opened, a member joined,
  refused, done or said goodbye, a piece finished or failed, the room all done, closed or
  aborted). A decision is acknowledged (``append`` returns) only once it is on disk; progress
  lines in between survive a process crash but may be lost with the machine.
- ``"every"``: fsync at every append. ``"none"``: never fsync (tests, simulations).

Appends are batched: :meth:`EventLog.buffer` queues events without IO and :meth:`EventLog.flush`
writes them all with one await (one write to the operating system; for a durable batch, one
fsync, made where the store says: a file log's in a worker thread, a room host's in the loop).
:meth:`EventLog.append` is buffer + flush.

A crash can tear the last line, or the header of a log that had just appeared (0 bytes, or any
prefix of a header). :func:`read_events` reports it (``torn``) and returns every whole event
before it (none, for a torn header); :meth:`EventLog.open` and :meth:`EventLog.reopen` report
it as a warning, cut it off and continue the chain (a log that lost its header gets a fresh one
for the same stream with its first event). Any other damage raises
:class:`~matchlock.core.errors.LogCorruptError` naming the line: it is never silently dropped.

This module never decides what a damaged log means for a room (the room host quarantines it).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

from matchlock.core import events as ev
from matchlock.core.chain import (
    GENESIS,
    LogDecoder,
    LogHeader,
    TornTail,
    decode_after,
    encode_event,
    encode_header,
)
from matchlock.core.errors import (
    IllegalEventError,
    LogCorruptError,
    LogError,
    LogWriteError,
    UsageError,
)
from matchlock.core.events import Event
from matchlock.core.room import Room, RoomState
from matchlock.store import FileStore, LogStore, MemoryStore

__all__ = [
    "DECISIONS",
    "Durability",
    "EventLog",
    "FileStore",
    "LogContents",
    "LogStore",
    "MemoryStore",
    "fold_events",
    "read_after",
    "read_events",
    "read_store",
    "replay_file",
]

logger = logging.getLogger(__name__)

Durability = Literal["decisions", "every", "none"]

DECISIONS = ev.DECISIONS
"""Event types whose loss would lose a decision: the log is fsynced when a batch holds one
(each event's class says whether it is one: ``decision``)."""


@dataclass(frozen=True)
class LogContents:
    """What a log holds: its header (None when a crash tore it: the log holds no event), every
    whole event, the torn last line if there was one, and the last whole line's hash."""

    header: LogHeader | None
    events: list[Event]
    torn: TornTail | None
    last_hash: str


def read_store(store: LogStore) -> LogContents:
    """Read and check the log in ``store`` (blocking: async code runs it in a thread); raises
    :class:`~matchlock.core.errors.LogCorruptError` naming the first bad line. A torn last line, or
    a torn header, is reported in ``torn``, never raised."""
    decoder = LogDecoder(store.name)
    listed = list(decoder.events(store.read()))
    return LogContents(decoder.header, listed, decoder.torn, decoder.last_hash)


def read_after(store: LogStore, since: int, upto: int) -> list[Event]:
    """Events ``since + 1`` to ``upto`` of the log in ``store``, each line's hash and its chain
    to the line before checked (blocking: async code runs it in a thread). A room host that
    holds only the last events of a room reads the older ones a welcome needs so. Raises
    :class:`~matchlock.core.errors.LogCorruptError` naming a bad line, or when the log holds
    fewer events."""
    wanted = upto - since
    events = list(itertools.islice(decode_after(store.read(since), since, store.name), wanted))
    if len(events) < wanted:
        why = f"the log holds {since + len(events)} events, not the {upto} its room has"
        raise LogCorruptError(store.name, since + len(events) + 2, why)
    return events


def _file(path: Path) -> FileStore:
    if not path.is_file():
        raise LogError(f"{path}: no such log file")
    return FileStore(path)


def read_events(path: Path | str) -> LogContents:
    """:func:`read_store` for the log file at ``path``."""
    return read_store(_file(Path(path)))


@dataclass(frozen=True)
class Replayed:
    """A log folded to its state: the state, the header (None when torn), the torn tail, the
    last whole line's hash."""

    state: RoomState
    header: LogHeader | None
    torn: TornTail | None
    last_hash: str


def fold_events(
    events: Iterable[Event],
    source: str,
    until: int | None = None,
    on_event: Callable[[int, Event], None] | None = None,
) -> Room:
    """Fold a log's events (event ``seq`` is on line ``seq + 1`` of ``source``) into a room.
    An event illegal in the state it meets raises :class:`~matchlock.core.errors.LogCorruptError`
    naming its line. ``until`` and ``on_event`` are :func:`replay_file`'s."""
    room = Room()
    apply = room.apply
    for seq, event in enumerate(events, start=1):
        try:
            apply(event)
        except IllegalEventError as error:
            raise LogCorruptError(source, seq + 1, f"illegal event: {error}") from None
        if on_event is not None:
            on_event(seq, event)
        if seq == until:
            break
    return room


def replay_file(
    path: Path | str | LogStore,
    until: int | None = None,
    on_event: Callable[[int, Event], None] | None = None,
) -> Replayed:
    """Check a log file (or the log of any store, given instead of a path) and fold it into
    its state, streaming (memory flat in the log's length).

    ``until`` stops after the event with that sequence number; ``on_event(seq, event)`` sees each
    event folded. A bad line or an event illegal in the state it meets raises
    :class:`~matchlock.core.errors.LogCorruptError` naming the line.
    """
    store = _file(Path(path)) if isinstance(path, str | Path) else path
    decoder = LogDecoder(store.name)
    room = fold_events(decoder.events(store.read()), store.name, until, on_event)
    return Replayed(room.snapshot(), decoder.header, decoder.torn, decoder.last_hash)


def _warn_torn(name: str, torn: TornTail) -> None:
    if torn.header:
        logger.warning(
            "%s: the header was torn by a crash (%d bytes survived): the log holds no event; "
            "recovered to an empty log",
            name,
            torn.size,
        )
    else:
        logger.warning(
            "%s: line %d was torn by a crash (%d bytes); recovered to the last whole event",
            name,
            torn.line,
            torn.size,
        )


def _stream_of(event: Event) -> str:
    """The stream of a log whose first event is ``event`` (for a log that lost its header)."""
    if isinstance(event, ev.RoomOpened):
        return f"room/{event.config.room_id}"
    if isinstance(event, ev.DownloadOpened):
        return "download"
    return "unknown"


class EventLog:
    """An open log being appended to. Create one with :meth:`create`, :meth:`new` or
    :meth:`start`; continue one with :meth:`open` or :meth:`reopen`."""

    def __init__(self, store: LogStore, seq: int, last_hash: str, durability: Durability) -> None:
        self.store = store
        self.seq = seq
        self.last_hash = last_hash
        self.durability: Durability = durability
        self._pending: list[bytes] = []
        self._pending_decision = False
        self._header_lost = False  # a header to write before the first event (reopen)
        self._lost_stream: str | None = None  # its stream, if known
        self._writing = asyncio.Lock()  # one write at a time: lines reach the store in order
        self._now = store if isinstance(store, FileStore) and store.writes_now else None
        self.broken: LogWriteError | None = None
        """Why the store refused a write: from then on the log writes nothing (every append
        raises this, and closing only closes the store)."""

    @classmethod
    def new(cls, store: LogStore, stream: str, durability: Durability = "decisions") -> EventLog:
        """A new log of ``stream`` in an empty ``store``. No IO: the header is buffered and
        written by the first :meth:`flush` (so a new log can be made inside synchronous code)."""
        log = cls(store, 0, GENESIS, durability)
        log._buffer_header(stream)
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
        cls, path: Path | str, durability: Durability = "decisions", *, stream: str | None = None
    ) -> tuple[EventLog, list[Event]]:
        """:meth:`reopen` the existing log file at ``path``."""
        return await cls.reopen(_file(Path(path)), durability, stream=stream)

    @classmethod
    async def reopen(
        cls, store: LogStore, durability: Durability = "decisions", *, stream: str | None = None
    ) -> tuple[EventLog, list[Event]]:
        """Continue the log in ``store``: check it, cut off a torn tail (logged as a warning),
        and return the log with every event it holds (to rebuild the state from).

        A log whose header was torn (or that is empty) holds no event: it is cut to nothing and
        gets a fresh header with its first event, for ``stream`` if given, else the stream its
        torn bytes name, else the one its first event implies (``room/<id>``, ``download``)."""
        contents = await asyncio.to_thread(read_store, store)
        if contents.torn is not None:
            _warn_torn(store.name, contents.torn)
            await store.drop_torn(contents.torn.size)
        log = cls(store, len(contents.events), contents.last_hash, durability)
        if contents.header is None:
            log._header_lost = True
            log._lost_stream = stream or (contents.torn.stream if contents.torn else None)
        return log, contents.events

    def _buffer_header(self, stream: str) -> None:
        header, self.last_hash = encode_header(stream)
        self._pending.append(header)
        self._pending_decision = True
        self._header_lost = False

    def buffer(self, *events: Event) -> None:
        """Chain ``events`` onto the log without writing them yet (see :meth:`flush`)."""
        for event in events:
            self.buffer_json(event, None)

    def buffer_json(self, event: Event, body: bytes | None) -> None:
        """:meth:`buffer` one event whose JSON (``EventAdapter.dump_json(event)``) the caller
        already made, so it is not made twice (the room host relays the same bytes)."""
        if self._header_lost:
            self._buffer_header(self._lost_stream or _stream_of(event))
        self.seq += 1
        line, self.last_hash = encode_event(self.seq, self.last_hash, event, body)
        self._pending.append(line)
        self._pending_decision = self._pending_decision or event.type in DECISIONS

    async def flush(self) -> None:
        """Write every buffered line with one await, durably when the policy says so; raises
        :class:`~matchlock.core.errors.LogWriteError` if the store refuses (or refused)."""
        async with self._writing:
            lines, durable = self._taken()
            if self.broken is not None:
                raise self.broken
            if lines:
                try:
                    await self.store.append(lines, durable=durable)
                except OSError as error:
                    raise self._broke(error) from error

    def _broke(self, error: OSError) -> LogWriteError:
        self.broken = LogWriteError(self.store.name, error)
        return self.broken

    @property
    def writes_now(self) -> bool:
        """Whether :meth:`write_now` may be used: the store writes without awaiting (a
        journaled :class:`~matchlock.store.files.FileStore`) and no :meth:`flush` is under
        way."""
        return self._now is not None and not self._writing.locked()

    def write_now(self) -> asyncio.Future[None] | None:
        """:meth:`flush` without awaiting (only where :attr:`writes_now`): write every buffered
        line at once; the future that ends once they are durable, or None when the policy asks
        for no sync (or nothing was buffered)."""
        assert self._now is not None, "only a log whose store writes now"
        lines, durable = self._taken()
        if self.broken is not None:
            raise self.broken
        try:
            return self._now.write_now(lines, durable) if lines else None
        except OSError as error:
            raise self._broke(error) from error

    def _taken(self) -> tuple[list[bytes], bool]:
        """:meth:`take`, and whether the policy makes their write durable."""
        decision = self._pending_decision
        durable = self.durability == "every" or (self.durability == "decisions" and decision)
        return self.take(), durable

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
        """Flush what is buffered and close the store (a broken log's store is only closed,
        and its error raised)."""
        try:
            await self.flush()
        finally:
            await self.store.close()

    async def abandon(self) -> None:
        """Close the store without writing what is buffered (a failed host's: its lines were
        never heard, and one appended after a failed write could follow a torn line)."""
        self.take()
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
