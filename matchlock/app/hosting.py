"""The room host's shell: connections in, the sans-IO :class:`~matchlock.core.host.HostProtocol` in
the middle, one event log per room on disk.

Every transport hands each accepted connection to :meth:`RoomHost.handle`. For each frame the
host core returns events, frames and closes; this shell buffers the events into the room's log
and queues the rest. A single sender commits in groups: it writes every queued log line (one
write per room log per batch) and, with the default ``durability="every"``, makes them durable
(file logs: one ``fdatasync`` of the host's journal for every room, :mod:`matchlock.store.journal`),
and only then sends the batch's frames, in the order the core produced them. So no
member ever hears of an event a crashed host could lose, neither in a process crash nor in a
power loss: a member's log is always a prefix of its host's. (With ``"decisions"`` only batches
holding a decision are fsynced: faster, but a power loss can then take progress lines members
heard, and those members are refused when they come back; ``docs/durability.md``.)

The logs live in a :class:`~matchlock.store.LogRepository`, one per room id (``log_dir`` gives
the files ``log_dir/<room_id>.log``). A restarted host (:meth:`RoomHost.start`) rebuilds every
room from its log, recovering torn ones and quarantining damaged ones; members the log shows
connected are recorded as disconnected, and reconnect with the events they already hold.

A host that cannot make a batch's lines durable (the disk full or failing, the store lost)
stops for good (:class:`~matchlock.core.errors.HostFailedError`): it sends none of the batch's
frames, closes every connection, takes no new one and writes nothing more to any log;
:meth:`RoomHost.unless_failed` raises that error in whoever runs the host (``matchlock serve``
exits with it). A restart recovers every room from what the logs hold.

Time and nonces come from ``clock`` and ``nonces``, so tests can fix them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from matchlock.core.errors import HostFailedError, LogCorruptError, LogError, UsageError
from matchlock.core.events import Event, RoomOpened
from matchlock.core.host import HELD_EVENTS, Backfill, ConnId, HostOutput, HostProtocol
from matchlock.core.machines import RoomStatus
from matchlock.store import FileRepository, LogRepository, MemoryRepository
from matchlock.store.eventlog import Durability, EventLog, fold_events, read_after
from matchlock.transport import Connection, ConnectionClosed, FrameTooLarge
from matchlock.transport.limits import ConnectionLimiter, Limits

__all__ = ["CLOSE_WAIT", "RoomHost"]

CLOSE_WAIT = 5.0
"""Seconds a handler waits for its connection's last frames to leave before it returns."""

logger = logging.getLogger(__name__)

T = TypeVar("T")


class RoomHost:
    """Hosts rooms for any transport, keeping each room's authoritative log, by room id, in
    ``store`` (a :class:`~matchlock.store.LogRepository`); or, given ``log_dir`` instead, in
    ``log_dir/<room_id>.log`` files; or in memory when neither is given. ``limits`` are the
    deadlines and caps every connection gets (:class:`~matchlock.transport.limits.Limits`),
    which ``limiter`` applies for every listener serving this host."""

    def __init__(
        self,
        log_dir: Path | None = None,
        *,
        store: LogRepository | None = None,
        clock: Callable[[], float] = time.time,
        nonces: Callable[[], bytes] = lambda: os.urandom(16),
        durability: Durability = "every",
        limits: Limits | None = None,
    ) -> None:
        if log_dir is not None and store is not None:
            raise UsageError("RoomHost takes log_dir or store, not both")
        self.log_dir = log_dir
        self.store: LogRepository = (
            store
            if store is not None
            else MemoryRepository()
            if log_dir is None
            else FileRepository(log_dir, sync="journal")  # one fdatasync per batch for all rooms
        )
        self.clock = clock
        self.nonces = nonces
        self.durability: Durability = durability
        self.limiter = ConnectionLimiter(limits)
        self.core = HostProtocol(
            max_users=self.limiter.limits.max_users_per_room,
            max_pieces=self.limiter.limits.max_pieces_per_room,
            held_events=HELD_EVENTS,  # older events a welcome needs are read from the log
        )
        self.logs: dict[str, EventLog] = {}
        self._conns: dict[ConnId, Connection] = {}
        self._ids = itertools.count(1)
        self._outbox: asyncio.Queue[HostOutput] = asyncio.Queue()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._closing: set[asyncio.Task[None]] = set()
        self._reads: set[asyncio.Task[None]] = set()
        self._closed: dict[ConnId, asyncio.Event] = {}
        self._dirty: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self.failure: HostFailedError | None = None
        self._failed = asyncio.Event()

    async def start(self) -> None:
        """Start sending and flushing, and rebuild every room whose log ``store`` holds. A torn
        log is recovered (:meth:`EventLog.reopen`); a log that holds no event is removed (the
        room's opening never reached the disk, so nobody heard of it); a damaged log's room is
        quarantined (joins refused, code ``quarantined``) while every other room is served."""
        sender = asyncio.create_task(self._send_forever())
        sender.add_done_callback(self._sender_ended)
        self._tasks = [sender]
        await self._restore_all()

    async def _restore_all(self) -> None:
        """Rebuild every room the store holds (a cluster node loads rooms when asked instead)."""
        for room_id in await self.store.ids():
            await self._restore(room_id)

    async def _restore(self, room_id: str) -> None:
        """Rebuild one room from its log, or remove or quarantine the log (see :meth:`start`)."""
        store = self.store.store(room_id)
        try:
            log, events = await EventLog.reopen(store, self.durability, stream=f"room/{room_id}")
            if events:
                _check_room_log(room_id, events, store.name)
        except LogError as error:
            self._quarantine(room_id, error)
            await store.close()
            return
        if not events:
            await log.close()
            await self.store.remove(room_id)
            logger.warning("%s holds no event (torn by a crash?): removed", store.name)
            return
        _, out = self.core.restore(events, self.clock())
        self.logs[room_id] = log
        self._do(out)
        logger.info("restored room %s from %s (%d events)", room_id, store.name, len(events))

    def _quarantine(self, room_id: str, error: LogError) -> None:
        """Refuse every join to ``room_id``, whose log cannot be trusted, and say why: the
        file, line and reason in the host's log; the line and reason to whoever says hello."""
        logger.error("room %s quarantined, its log is damaged: %s", room_id, error)
        where = (
            f" at line {error.line}: {error.reason}" if isinstance(error, LogCorruptError) else ""
        )
        self.core.quarantine(room_id, f"the host's log of the room is damaged{where}")

    async def stop(self, timeout: float = 5.0) -> None:
        """Close every connection (each records its disconnect), send and write what is queued,
        then close every log. Call it after the listeners are closed."""
        await asyncio.gather(*(conn.close() for conn in list(self._conns.values())))
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=timeout)
        if self._tasks and not self._tasks[0].done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._outbox.join(), timeout)
        for task in self._tasks:
            task.cancel()
        await (self._abandon_logs() if self.failure is not None else self._close_logs())

    async def _close_logs(self) -> None:
        """Close every log (flushing what is buffered)."""
        for log in self.logs.values():
            await log.close()

    async def _abandon_logs(self) -> None:
        """Close every log of a failed host without writing what is buffered (lines no member
        heard of; one appended after a failed write could follow a torn line)."""
        for room_id, log in self.logs.items():
            try:
                await log.abandon()
            except (OSError, LogError) as error:  # the disk that failed may fail again
                logger.warning("room %s: its log did not close cleanly: %s", room_id, error)

    async def unless_failed(self, work: Awaitable[T]) -> T:
        """Run ``work`` (say, waiting for a signal to stop) and return its result, unless the
        host fails first: then ``work`` is cancelled and :attr:`failure` raised."""
        task = asyncio.ensure_future(work)
        failed = asyncio.ensure_future(self._failed.wait())
        try:
            await asyncio.wait((task, failed), return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # cancelled: so is ``work``, which ends first
            await _cancelled(task)
            raise
        finally:
            failed.cancel()
        if task.done():
            return task.result()
        await _cancelled(task)
        assert self.failure is not None  # the only other way out of the wait
        raise self.failure

    async def linger(self, room_id: str, timeout: float) -> bool:
        """Wait until room ``room_id`` has ended and every member was sent its end
        (:meth:`~matchlock.core.host.HostProtocol.everyone_told`), and those frames have left, or
        ``timeout`` seconds; whether everyone was told. A player hosting its own room calls
        it before it stops, so that members who missed the end (the host crashed before
        sending it) can still come back for it."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not self.core.everyone_told(room_id):
                    await asyncio.sleep(0.05)
                await self._outbox.join()
                return True
        return False

    def holds(self, room_id: str) -> bool:
        """Whether this host holds room ``room_id`` (running or ended, opened here or rebuilt
        from its log), so that a member looking for it, even one that missed its end, is told
        where it is (LAN discovery asks this)."""
        return room_id in self.core.rooms

    def active_rooms(self) -> list[str]:
        """The ids of the rooms this host holds that have not ended (neither closed nor
        aborted) and are not quarantined, sorted: those worth listing to players looking for
        a room (LAN discovery lists these)."""
        ended = (RoomStatus.CLOSED, RoomStatus.ABORTED)
        return sorted(
            room_id
            for room_id, hosted in self.core.rooms.items()
            if hosted.room.status not in ended and room_id not in self.core.quarantined
        )

    def abort(self, room_id: str, reason: str) -> None:
        """End a room that cannot complete (``room_aborted``); its members are disconnected."""
        self._do(self.core.abort(room_id, reason, self.clock()))

    async def handle(self, conn: Connection) -> None:
        """Serve one connection until it closes. One that has not joined its room within
        ``limiter.limits.handshake_timeout`` seconds of arriving is closed, and counted in the
        host's diagnostics (``limiter.counts["handshake_timeout"]``), not in any room's log. A
        failed host closes it at once."""
        if self.failure is not None:
            await conn.close()
            return
        cid = next(self._ids)
        self._conns[cid] = conn
        handler = asyncio.current_task()
        assert handler is not None  # handle() runs in a task
        self._handlers.add(handler)
        self.core.connect(cid, self.nonces())
        deadline = asyncio.get_running_loop().time() + self.limiter.limits.handshake_timeout
        try:
            while cid in self._conns:
                frame = await self._next_frame(cid, conn, deadline)
                if frame is None:
                    self.limiter.note(
                        "handshake_timeout",
                        f"{conn!r} had not joined {self.limiter.limits.handshake_timeout:g} s "
                        "after connecting: closed",
                    )
                    break
                if not self.core.joined(cid):
                    await self._before_join(cid, frame)
                self._do(self.core.receive(cid, frame, self.clock()))
        except FrameTooLarge as error:
            self._do(self.core.frame_too_large(cid, error.limit, self.clock()))
        except ConnectionClosed:
            pass
        finally:
            self._handlers.discard(handler)
            if cid in self._conns:  # the core may not know yet: tell it, then close after the
                self._do(self.core.disconnect(cid, self.clock()))  # frames already queued
                closed = self._closed[cid] = asyncio.Event()
                self._do(HostOutput(closes=[cid]))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(closed.wait(), CLOSE_WAIT)

    async def _before_join(self, cid: ConnId, frame: bytes) -> None:
        """Called with each frame of a connection that has not joined yet, before the core
        sees it (a cluster node loads the room a hello names from the shared log here)."""

    async def _next_frame(self, cid: ConnId, conn: Connection, deadline: float) -> bytes | None:
        """The connection's next frame; None once ``deadline`` passes before it has joined."""
        if self.core.joined(cid):
            return await conn.recv()
        scope = asyncio.timeout_at(deadline)
        try:
            async with scope:
                return await conn.recv()
        except TimeoutError:
            if scope.expired():
                return None
            raise

    def _do(self, out: HostOutput) -> None:
        """Buffer ``out``'s events into the logs and queue its frames and closes for the sender.
        Nothing here awaits, so logs and frames keep exactly the core's order. A transfer's
        frames, which tell of no event, are sent at once: a data frame never waits on a sync.
        A failed host drops it: it writes and sends nothing more."""
        if self.failure is not None:
            return
        if out.transfer_only:
            self._send(out)
            return
        self._buffer(out)
        self._outbox.put_nowait(out)

    def _buffer(self, out: HostOutput) -> None:
        """Buffer ``out``'s events into their rooms' logs (and say what was refused)."""
        forgotten = set()
        for room_id, event, body in out.events:
            log = self.logs.get(room_id)
            if log is None:
                log = None if room_id in forgotten else self._opened_log(room_id)
                if log is None:  # the room is forgotten: its events are nobody's now
                    forgotten.add(room_id)
                    continue
            log.buffer_json(event, body)
            self._dirty.add(room_id)
        for room_id, user_id, code, reason in out.diagnostics:  # never in a room's log
            logger.info("refused %r for room %r: %s: %s", user_id, room_id, code, reason)

    def _opened_log(self, room_id: str) -> EventLog | None:
        """The log of a room this host has just opened, its file opened at once where it has
        one: should that fail (too many open files, no room for the file), the room is
        forgotten and its member closed before anyone heard of it (None), and the host goes
        on serving every other room (the member's next try may find a descriptor free)."""
        log = self._new_log(room_id)
        open_now = getattr(log.store, "open_now", None)
        try:
            if open_now is not None:
                open_now()
        except OSError as error:
            logger.error(
                "cannot open the log of new room %s (%s): its member is closed", room_id, error
            )
            for cid in self.core.forget(room_id):
                self._close(cid)
            return None
        self.logs[room_id] = log
        return log

    def _new_log(self, room_id: str) -> EventLog:
        return EventLog.new(self.store.create(room_id), f"room/{room_id}", self.durability)

    async def _send_forever(self) -> None:
        """Group commit: write every log line queued by the end of the next turn of the loop
        (fsyncing where the durability asks), then send the frames of those outputs, in
        order."""
        while True:
            batch = [await self._outbox.get()]
            # One turn of the loop for the other connections whose frames arrived meanwhile to
            # add their outputs: one record and one sync for all of them, not one each (a
            # paced host's CPU per delivery: 1.42-1.47x the bare server's, against 1.68-1.78x).
            await asyncio.sleep(0)
            while not self._outbox.empty():
                batch.append(self._outbox.get_nowait())
            try:
                try:
                    ready = await self._commit(batch)
                except Exception as error:  # the disk or the store: none of it may be sent
                    self._fail(error)
                    return
                for out in ready:
                    self._send(out)
                    for cid in out.closes:
                        self._close(cid)
                    for wanted in out.backfills:  # its lines are in the log now
                        self._read_later(wanted)
            finally:
                for _ in batch:
                    self._outbox.task_done()

    def _sender_ended(self, sender: asyncio.Task[None]) -> None:
        """The sender ends only when cancelled or failed: should it ever end otherwise (a bug),
        the host stops as for a failed disk, loudly, rather than go on sending nothing."""
        if not sender.cancelled() and (error := sender.exception()) is not None:
            self._fail(error, "failed while sending")

    def _fail(self, error: BaseException, what: str = "could not write its logs") -> None:
        """Stop hosting for good: ``error`` kept a batch's lines from being made durable (or
        ``what`` else went wrong), so nothing queued is sent, every connection is closed and
        :meth:`unless_failed` raises."""
        self.failure = HostFailedError(error, what)
        logger.error("%s", self.failure)
        while not self._outbox.empty():
            self._outbox.get_nowait()
            self._outbox.task_done()
        for cid in list(self._conns):
            self._close(cid)
        self._failed.set()

    async def _commit(self, batch: list[HostOutput]) -> list[HostOutput]:
        """Make every buffered log line durable; the outputs whose frames may now be sent. A
        cluster node also takes more of the outbox into ``batch`` here (each is marked done)."""
        dirty, self._dirty = self._dirty, set()
        commit_now = getattr(self.store, "commit_now", None)
        synced: list[asyncio.Future[None]] = []
        flushes = []
        for room_id in dirty:
            log = self.logs[room_id]
            if commit_now is not None and log.writes_now:  # a journaled file: committed below
                if (written := log.write_now()) is not None:
                    synced.append(written)
            else:
                flushes.append(log.flush())
        if commit_now is not None:
            commit_now()  # the batch's one record, now: no turn of the loop waits for it
        if len(flushes) == 1:  # the usual batch at a modest rate: no task to gather
            await flushes[0]
        elif flushes:  # side by side: the file store syncs them all in one hop to a thread
            await asyncio.gather(*flushes)
        for written in synced:
            await written  # done already when committed above: no wait
        for room_id in dirty:  # an ended room's history is complete and durable, and a file
            hosted = self.core.rooms.get(room_id)  # log's room with nobody in it idle: its file
            log = self.logs[room_id]  # closes (the next event opens it again), so that a host
            if hosted is not None and (  # holds a descriptor per room only while played in
                hosted.ended or (log.writes_now and not hosted.members and not hosted.welcoming)
            ):
                await log.store.close()
        return batch

    def _send(self, out: HostOutput) -> None:
        conns = self._conns
        for cid, frame in out.sends:
            conn = conns.get(cid)
            if conn is None:
                continue
            try:
                conn.send_nowait(frame)
            except ConnectionClosed:  # its handler hears of it and tells the core
                pass
            except Exception:  # a transport's fault, this connection's alone: the others go on
                logger.exception("cannot send to %r; closing it", conn)
                self._shut(conn)

    def _read_later(self, wanted: Backfill) -> None:
        """Read the events a welcome needs from the room's log without holding up the
        sender, then hand them to the core (which sends the welcome)."""
        task = asyncio.create_task(self._backfill(wanted))
        self._reads.add(task)
        task.add_done_callback(self._reads.discard)

    async def _backfill(self, wanted: Backfill) -> None:
        log = self.logs.get(wanted.room_id)
        store = log.store if log is not None else self.store.store(wanted.room_id)
        try:
            events = await asyncio.to_thread(read_after, store, wanted.since, wanted.upto)
        except (LogError, OSError) as error:  # the member is closed: it comes back later
            logger.error("cannot welcome a member of room %s: %s", wanted.room_id, error)
            self._do(self.core.disconnect(wanted.conn, self.clock()))
            self._do(HostOutput(closes=[wanted.conn]))
            return
        self._do(self.core.backfilled(wanted.conn, events, self.clock()))

    def _shut(self, conn: Connection) -> None:
        """Close ``conn`` and let its handler hear of it, as of a peer that left (it tells the
        core): for a connection the host cannot send to."""

        async def shut() -> None:
            try:
                await conn.close()
            except Exception:
                logger.exception("cannot close %r", conn)

        task = asyncio.create_task(shut())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _close(self, cid: ConnId) -> None:
        """Close ``cid`` without holding up the sender (a peer may take long to answer)."""
        conn = self._conns.pop(cid, None)
        if conn is None:
            return
        task = asyncio.create_task(conn.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        closed = self._closed.pop(cid, None)
        if closed is not None:
            task.add_done_callback(lambda _: closed.set())


async def _cancelled(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and wait until it has ended (however it ends)."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


def _check_room_log(room_id: str, events: list[Event], source: str) -> None:
    """Raise :class:`~matchlock.core.errors.LogCorruptError` naming the line unless ``events`` are
    the legal history of the room ``room_id`` (the name its log has in the store)."""
    first = events[0]
    if not isinstance(first, RoomOpened):
        raise LogCorruptError(source, 2, f"the log starts with {first.type}, not room_opened")
    if first.config.room_id != room_id:
        why = f"the log holds room {first.config.room_id!r}, not {room_id!r}"
        raise LogCorruptError(source, 2, why)
    fold_events(events, source)
