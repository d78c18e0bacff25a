"""One node of a cluster of room hosts sharing their rooms' logs in NATS JetStream.

:class:`ClusterHost` is the :class:`~matchlock.app.hosting.RoomHost` shell with three more
duties, so that any node serves any room and a room's members may be spread over nodes:

- **Loading and following.** A node holds a room once one of its members says hello to it:
  the room's log is read from the stream (before the answer is read) and folded through the
  core (:meth:`~matchlock.core.host.HostProtocol.follow`), or, when the stream has none, the
  room is opened here. From then on the node follows the room's subject
  (:meth:`~matchlock.store.nats.NatsRepository.follow`); the lines other nodes append are
  checked against the hash chain (:func:`~matchlock.core.chain.decode_line`), applied through
  the same core and relayed to this node's members, in the log's order.
- **Conflicts.** Appends go to the stream at the position this node last saw; when another node
  appended first, the stream refuses (:class:`~matchlock.core.errors.LogConflictError`). The
  node then re-reads the room's log and has the core decide its refused events again on top of
  the other node's (:meth:`~matchlock.core.host.HostProtocol.rebase`): each is recorded, or
  refused to its member with the reason. Frames about refused events are never sent.
- **A lost log.** When the connection to NATS is lost, or an append fails for good, the node
  stops serving the rooms concerned: it forgets them (nothing recorded) and closes their
  members' connections, so that they join again, on this node once NATS is back or on another,
  rather than hear a stale room. While the connection is down new connections are closed.

The group commit is kept: a batch's frames are sent only once every event they tell of is
acknowledged by the stream. This module decides nothing about a room: every decision is the
core's; it moves lines between the stream and the core, and frames to members.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any

from matchlock.app.hosting import RoomHost, _check_room_log
from matchlock.core.chain import decode_line
from matchlock.core.errors import IllegalEventError, LogConflictError, LogError
from matchlock.core.events import Event
from matchlock.core.host import ConnId, HostOutput
from matchlock.store.eventlog import EventLog
from matchlock.store.nats import Following, NatsRepository, NatsStore
from matchlock.transport import Connection

__all__ = ["CATCH_UP", "FOLLOW_WAIT", "ClusterHost"]

CATCH_UP = 2.0
"""Seconds a hello for a room this node holds waits for the node to catch up with the stream."""

FOLLOW_WAIT = 0.2
"""Seconds a node whose append conflicted waits for the room's follower to bring the other
node's lines, before it reads the room's log again from the stream instead."""

logger = logging.getLogger(__name__)


class ClusterHost(RoomHost):
    """A room host whose rooms' logs are in ``repository``, shared with other nodes (the
    other arguments are :class:`~matchlock.app.hosting.RoomHost`'s). ``available`` is False
    while the connection to NATS is lost."""

    def __init__(self, repository: NatsRepository, **options: Any) -> None:
        super().__init__(store=repository, **options)
        self.core.held_events = None  # a rebase rebuilds a room from its whole history
        self.repository = repository
        self.available = True
        self.conflicts = 0
        """Appends the stream refused because another node appended first (each rebased)."""
        self._confirmed: dict[str, int] = {}  # events of each room's log the stream holds
        self._hashes: dict[str, str] = {}  # and the hash of its last line there
        self._following: dict[str, Following] = {}
        self._inbox: dict[str, list[tuple[int, bytes]]] = {}
        self._loading: dict[str, asyncio.Lock] = {}
        self._retired: weakref.WeakKeyDictionary[EventLog, int] = weakref.WeakKeyDictionary()
        """Logs no longer a room's (forgotten, replaced), with how far the stream held them."""
        self._seqs: dict[int, dict[str, tuple[EventLog, int]]] = {}  # id(output) -> room ->
        # the log its events went to, and the last one's seq

    # -- rooms in and out --------------------------------------------------------------

    async def _restore_all(self) -> None:
        """Nothing is restored: a room is loaded when one of its members says hello."""
        self.repository.watch(self._connection_changed)

    async def handle(self, conn: Connection) -> None:
        """Serve ``conn`` (closed at once while the connection to NATS is lost)."""
        if not self.available:
            await conn.close()
            return
        await super().handle(conn)

    async def _before_join(self, cid: ConnId, frame: bytes) -> None:
        """Load the room a hello names from the stream, if this node does not hold it."""
        room_id = self.core.room_named(frame)
        if room_id is None or room_id in self.core.quarantined:
            return
        if room_id in self.core.rooms:
            await self._catch_up(room_id)
            return
        async with self._loading.setdefault(room_id, asyncio.Lock()):
            if room_id not in self.core.rooms:
                try:
                    await self._load(room_id)
                except LogError as error:
                    logger.warning("room %s not loaded: %s", room_id, error)
                    self._close(cid)

    async def _catch_up(self, room_id: str) -> None:
        """Wait (:data:`CATCH_UP` at most) until this node holds every line the stream holds
        of a room it holds, so that a member moving here with more is not refused."""
        subject = self.repository.subject(room_id)
        try:
            last = await self.repository.wait(self.repository.last_sequence(subject))
        except LogError:
            return  # the hello goes on; a lost stream is the watcher's to tell
        deadline = asyncio.get_running_loop().time() + CATCH_UP
        while (log := self.logs.get(room_id)) is not None and _nats(log).last < last:
            if asyncio.get_running_loop().time() > deadline:
                return
            await self._follow(room_id)  # (a room rebased but never appended since is not)
            self._outbox.put_nowait(HostOutput())  # the sender applies what was followed
            await asyncio.sleep(0.005)

    async def _load(self, room_id: str) -> None:
        subject = self.repository.subject(room_id)
        if not await self.repository.wait(self.repository.last_sequence(subject)):
            return  # no such room yet: the first member to answer opens it here
        store = NatsStore(self.repository, room_id, 0)
        log, events = await EventLog.reopen(store, self.durability, stream=f"room/{room_id}")
        if not events or room_id in self.core.rooms:
            return  # a member opened it here meanwhile: its first append conflicts, rebases
        try:
            _check_room_log(room_id, events, store.name)
        except LogError as error:
            self._quarantine(room_id, error)
            return
        self._adopt(room_id, log)
        self._outbox.put_nowait(self.core.follow(room_id, events, self.clock()))
        await self._follow(room_id)
        logger.info("loaded room %s from %s (%d events)", room_id, store.name, len(events))

    def _adopt(self, room_id: str, log: EventLog) -> None:
        old = self.logs.get(room_id)
        if old is not None and old is not log:
            self._retired[old] = self._confirmed.get(room_id, 0)
        self.logs[room_id] = log
        self._confirmed[room_id] = log.seq
        self._hashes[room_id] = log.last_hash

    def _new_log(self, room_id: str) -> EventLog:
        """A room opened here: its first append conflicts if another node opened it first."""
        log = EventLog.new(NatsStore(self.repository, room_id, 0), f"room/{room_id}")
        log.durability = self.durability
        self._confirmed[room_id] = 0
        return log

    async def _follow(self, room_id: str) -> None:
        if room_id in self._following or room_id not in self.logs:
            return
        after = _nats(self.logs[room_id]).last
        self._following[room_id] = following = await self.repository.follow(
            room_id, after, lambda sequence, data: self._heard(room_id, sequence, data)
        )
        if room_id not in self.logs:  # forgotten meanwhile
            await following.stop()

    def _heard(self, room_id: str, sequence: int, data: bytes) -> None:
        self._inbox.setdefault(room_id, []).append((sequence, data))
        self._outbox.put_nowait(HostOutput())  # wakes the sender

    def _forget(self, room_id: str, why: str) -> None:
        """Stop serving ``room_id`` here: its members' connections are closed now."""
        logger.warning("room %s: stopped serving it here: %s", room_id, why)
        for cid in self.core.forget(room_id):
            self._close(cid)
        old = self.logs.pop(room_id, None)
        if old is not None:
            self._retired[old] = self._confirmed.get(room_id, 0)
        self._confirmed.pop(room_id, None)
        self._hashes.pop(room_id, None)
        self._inbox.pop(room_id, None)
        self._dirty.discard(room_id)
        self._unfollow(room_id)

    def _unfollow(self, room_id: str) -> None:
        following = self._following.pop(room_id, None)
        if following is not None:
            task = asyncio.create_task(following.stop())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def _connection_changed(self, up: bool) -> None:
        self.available = up
        if not up:
            for room_id in list(self.core.rooms):
                self._forget(room_id, "the connection to NATS was lost")

    async def _close_logs(self) -> None:
        """Close every log; lines the stream refuses now (another node appended since) were
        never acknowledged, so no member heard of them: said, not raised."""
        for room_id, log in self.logs.items():
            try:
                await log.close()
            except LogError as error:
                logger.warning("room %s: lines left unwritten at stop: %s", room_id, error)

    async def stop(self, timeout: float = 5.0) -> None:
        """:meth:`RoomHost.stop`, then stop following every room."""
        await super().stop(timeout)
        for following in self._following.values():
            await following.stop()
        self._following.clear()

    # -- the group commit, shared ------------------------------------------------------

    def _buffer(self, out: HostOutput) -> None:
        """:meth:`RoomHost._buffer`, noting where each room's log is after ``out``'s events."""
        super()._buffer(out)
        if out.events:
            self._seqs[id(out)] = {
                room_id: (self.logs[room_id], self.logs[room_id].seq)
                for room_id, *_ in out.events
                if room_id in self.logs  # not a room forgotten as its log could not open
            }

    async def _commit(self, batch: list[HostOutput]) -> list[HostOutput]:
        """Append every buffered line; on a conflict re-read the room and rebase it, until
        every event ``batch`` (and what a rebase added) tells of is in the stream; the outputs
        whose rooms are all in the stream are sent as soon as they are, the others wait (a
        room contended by another node does not hold up the rest). Then the rest of the
        outputs, with frames about refused events dropped, and the relays of what other nodes
        appended, after them."""
        outs = list(batch)
        try:
            while True:
                outs = self._send_ready(outs)
                dirty, self._dirty = self._dirty, set()
                logs = {room_id: self.logs[room_id] for room_id in dirty}
                failures = await asyncio.gather(
                    *(self._flush(room_id, log) for room_id, log in logs.items())
                )
                failed = {r: e for r, e in zip(logs, failures, strict=True) if e is not None}
                if failed:
                    await self._recover(failed, logs, batch, outs)
                if not self._behind(outs) or not self._dirty:
                    break
            for out in outs:
                self._drop_stale(out)
            outs += self._followed()
            return outs
        finally:
            for out in outs:
                self._seqs.pop(id(out), None)

    async def _flush(self, room_id: str, log: EventLog) -> Exception | None:
        seq, digest = log.seq, log.last_hash
        try:
            await log.flush()
        except LogError as error:  # a conflict, or NATS lost for good
            return error
        if self.logs.get(room_id) is log:
            if seq >= self._confirmed.get(room_id, 0):
                self._confirmed[room_id], self._hashes[room_id] = seq, digest
            if room_id not in self._following:
                await self._follow(room_id)
            self._settle(room_id)
        return None

    def _settle(self, room_id: str) -> None:
        """Stop following a room that has ended (it is kept, for read-only welcomes)."""
        hosted = self.core.rooms.get(room_id)
        if hosted is not None and hosted.ended:
            self._unfollow(room_id)

    def _behind(self, outs: list[HostOutput]) -> bool:
        """Whether some event of ``outs`` is not in the stream yet."""
        return any(self._waits(out) for out in outs)

    def _waits(self, out: HostOutput) -> set[str]:
        """The rooms of which ``out`` tells an event not in the stream yet."""
        return {
            room_id
            for room_id, (log, seq) in self._seqs.get(id(out), {}).items()
            if self.logs.get(room_id) is log and seq > self._confirmed.get(room_id, 0)
        }

    def _drop_stale(self, out: HostOutput) -> None:
        """Drop ``out``'s frames when it tells of an event of a room's log this node no longer
        holds (forgotten, or replaced by a rebase) that the stream never held: a room closed
        here has no members left for a forget to close, yet its close must never be heard."""
        for log, seq in self._seqs.get(id(out), {}).values():
            if seq > self._retired.get(log, seq):
                out.sends = []

    def _send_ready(self, outs: list[HostOutput]) -> list[HostOutput]:
        """Send the outputs of ``outs`` that wait for nothing and follow no output of their
        rooms that waits; the others, in order."""
        blocked: set[str] = set()
        left = []
        for out in outs:
            self._drop_stale(out)
            waits = self._waits(out) | (blocked & set(self._seqs.get(id(out), {})))
            if waits or (not out.events and blocked and out.sends):
                blocked |= waits
                left.append(out)
                continue
            self._send(out)
            for cid in out.closes:
                self._close(cid)
            self._seqs.pop(id(out), None)
        return left

    async def _recover(
        self,
        failed: dict[str, Exception],
        logs: dict[str, EventLog],
        batch: list[HostOutput],
        outs: list[HostOutput],
    ) -> None:
        """Rebase each room whose append conflicted; forget each whose append failed."""
        conflicted = []
        for room_id, error in failed.items():
            if self.logs.get(room_id) is not logs[room_id]:
                continue  # forgotten (or loaded again) meanwhile
            if isinstance(error, LogConflictError):
                conflicted.append(room_id)
            else:
                self._forget(room_id, str(error))
        self.conflicts += len(conflicted)
        found = await asyncio.gather(*(self._theirs(r, logs[r]) for r in conflicted))
        reread = {r: theirs for r, theirs in zip(conflicted, found, strict=True) if theirs}
        # no await from here on: what the core did meanwhile is in the outbox, taken now
        while not self._outbox.empty():
            out = self._outbox.get_nowait()
            batch.append(out)
            outs.append(out)
        for room_id, (log, theirs) in reread.items():
            if self.logs.get(room_id) is logs[room_id]:
                self._rebase(room_id, log, theirs, outs)
        for room_id in reread:  # a room opened here whose first append lost: follow it now
            await self._follow(room_id)

    async def _theirs(self, room_id: str, old: EventLog) -> tuple[EventLog, list[Event]] | None:
        """The other node's events after this node's last in the stream, and the room's log
        after them: from the follower, else read again (None when the room was forgotten)."""
        heard = await self._heard_since(room_id, old)
        if heard is not None:
            return heard
        try:
            store = NatsStore(self.repository, room_id, 0)
            log, events = await EventLog.reopen(store, self.durability, stream=f"room/{room_id}")
        except LogError as lost:
            self._forget(room_id, str(lost))
            return None
        kept = self._confirmed.get(room_id, 0)
        if len(events) < kept:
            self._forget(room_id, f"the stream holds {len(events)} events, not {kept}")
            return None
        return log, events[kept:]

    async def _heard_since(
        self, room_id: str, old: EventLog
    ) -> tuple[EventLog, list[Event]] | None:
        """The other node's lines after this node's last line in the stream, as the room's
        follower brings them (waiting :data:`FOLLOW_WAIT` at most for the first), checked
        against the chain, and the room's log after them; None when none came or they do not
        chain on (then the room's log is read again from the stream)."""
        store = _nats(old)
        deadline = asyncio.get_running_loop().time() + FOLLOW_WAIT
        while not any(sequence > store.last for sequence, _ in self._inbox.get(room_id, ())):
            if asyncio.get_running_loop().time() > deadline:
                return None
            await asyncio.sleep(0.001)
        if self.logs.get(room_id) is not old:
            return None
        kept, digest = self._confirmed.get(room_id, 0), self._hashes.get(room_id)
        if digest is None:
            return None
        log = EventLog(store, kept, digest, self.durability)
        try:
            return log, self._decode(log, self._inbox.pop(room_id))
        except LogError:
            return None

    def _rebase(
        self, room_id: str, log: EventLog, theirs: list[Event], outs: list[HostOutput]
    ) -> None:
        kept = self._confirmed.get(room_id, 0)
        if not theirs:
            self._append_again(room_id, log, kept, outs)
            return
        for out in outs:  # frames about events the stream refused are never sent
            _, seq = self._seqs.get(id(out), {}).get(room_id, (log, 0))
            if seq > kept:
                out.sends = []
        self._adopt(room_id, log)
        heard, decided = self.core.rebase(room_id, kept, theirs, self.clock())
        self._buffer(decided)
        outs += (heard, decided)
        logger.info("room %s: another node appended first; %d of its events taken, ours "
                    "decided again", room_id, len(theirs))  # fmt: skip

    def _append_again(self, room_id: str, log: EventLog, kept: int, outs: list[HostOutput]) -> None:
        """The stream refused this node's lines, yet holds nothing new: a clustered stream
        refuses an append behind one still being replicated, before it can be read. Send the
        same lines again, at the same place (the next try conflicts once the other lands, and
        is rebased then); the frames they wait for stay as they are."""
        self._adopt(room_id, log)
        for event in self.core.rooms[room_id].history[kept:]:
            log.buffer_json(event, None)
        self._dirty.add(room_id)
        for out in outs:  # they now wait for the lines in this log
            seqs = self._seqs.get(id(out), {})
            if room_id in seqs:
                seqs[room_id] = (log, seqs[room_id][1])

    def _followed(self) -> list[HostOutput]:
        """Apply what other nodes appended to rooms with nothing of this node's pending."""
        outs = []
        for room_id in [r for r in self._inbox if r not in self._dirty]:
            lines = self._inbox.pop(room_id)
            log = self.logs.get(room_id)
            if log is None:
                continue
            try:
                events = self._decode(log, lines)
                outs.append(self.core.follow(room_id, events, self.clock()))
            except (LogError, IllegalEventError) as error:
                self._forget(room_id, f"its log moved out of step with this node: {error}")
                continue
            self._confirmed[room_id], self._hashes[room_id] = log.seq, log.last_hash
            self._settle(room_id)
        return outs

    @staticmethod
    def _decode(log: EventLog, lines: list[tuple[int, bytes]]) -> list[Event]:
        """The events of ``lines`` (stream sequence, line) past ``log``'s end, checked against
        its chain; ``log`` moves to their end."""
        store = _nats(log)
        events = []
        for sequence, data in lines:
            if sequence <= store.last:
                continue  # this node's own, or read already
            if data:
                event, log.last_hash = decode_line(data, log.seq + 1, log.last_hash, store.name)
                log.seq += 1
                events.append(event)
            store.last = sequence
        return events


def _nats(log: EventLog) -> NatsStore:
    store = log.store
    assert isinstance(store, NatsStore)  # every log of a ClusterHost is in the stream
    return store
