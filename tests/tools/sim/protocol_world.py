"""A world of the sans-IO cores alone, for the stateful property test of the protocols
(``tests/core/test_protocol_stateful.py``, where hypothesis is the scheduler): one host core, its
members' client cores and an adversary, wired by queues and stepped one delivery at a time.

This is not the simulation (:mod:`matchlock.tools.sim` runs the real shells): the host's restart and
the member's catch-up are played here with the cores' own calls
(:meth:`~matchlock.core.host.HostProtocol.restore`, :func:`~matchlock.core.client.catch_up`) so that
hypothesis can choose and shrink every single delivery, which a shell's tasks would hide.
Downloads are played too: each resolvable succeeds, fails, stalls or serves corrupt bytes as
the generator decides. Time is the step number.
"""

from __future__ import annotations

import base64
import random
from collections import deque
from dataclasses import dataclass, field

from matchlock.core import events as ev
from matchlock.core import protocol as pr
from matchlock.core.chain import LogDecoder
from matchlock.core.client import ClientProtocol, catch_up
from matchlock.core.config import RoomConfig
from matchlock.core.host import HostOutput, HostProtocol
from matchlock.core.room import Room
from matchlock.store.eventlog import EventLog, MemoryStore
from matchlock.tools.testing import insecure_key

__all__ = ["FAULTS", "SimHost", "SimMember", "World"]

FAULTS = ("delay", "drop", "resolvable", "crash", "duplicate", "hostile")
"""What can go wrong: ``delay`` reorders deliveries across connections, ``drop`` cuts a
member's connection, ``resolvable`` makes resolvables fail, stall or serve corrupt bytes,
``crash`` restarts the host from its log (sometimes torn), ``duplicate`` sends a report twice,
``hostile`` connects impostors and makes members send bad reports."""

START = 1_700_000_000.0
"""The simulated clock at step 0 (seconds); each step adds 10 ms."""


def _log_lines(log: EventLog) -> list[bytes]:
    assert isinstance(log.store, MemoryStore)
    return log.store.lines


class SimHost:
    """The host: the real core, a log in the real format, and crash and restart."""

    def __init__(self, planted: frozenset[str]) -> None:
        self.planted = planted
        self.core = HostProtocol(planted_bugs=planted)
        self.log: EventLog | None = None
        self.torn_at: list[int] = []

    @property
    def lines(self) -> list[bytes]:
        """The host log's lines."""
        return [] if self.log is None else _log_lines(self.log)

    def record(self, out: HostOutput) -> None:
        """Write ``out``'s events to the log (before any of its frames can be delivered)."""
        for room_id, event, body in out.events:
            if self.log is None:
                self.log = EventLog.in_memory(f"room/{room_id}")
            self.log.buffer_json(event, body)
        if self.log is not None:
            _log_lines(self.log).extend(self.log.take())

    def crash(self, tear: bool, at: float) -> HostOutput:
        """Lose the process (and, with ``tear``, half of the log's last line); restart from the
        log as :meth:`matchlock.app.hosting.RoomHost.start` does. Returns what the restart
        records."""
        self.core = HostProtocol(planted_bugs=self.planted)
        if self.log is None:
            return HostOutput()
        lines = _log_lines(self.log)
        if tear and len(lines) > 1:
            lines[-1] = lines[-1][: len(lines[-1]) // 2]
            self.torn_at.append(len(lines))
        decoder = LogDecoder("host.log")
        events = list(decoder.events(lines))
        if decoder.torn is not None:
            del lines[-1]  # what EventLog.open does to a torn tail
        if not events:  # the opening was torn: what RoomHost.start does with such a log
            self.log = None
            return HostOutput()
        self.log = EventLog(MemoryStore(), decoder.seq, decoder.last_hash, "none")
        _log_lines(self.log).extend(lines)
        return self.core.restore(events, at)[1]


@dataclass
class _Download:
    """One piece's simulated download: the outcome of each resolvable, in order."""

    plan: list[str]
    cached: bool
    attempt: int = 0
    retries: int = 1


@dataclass
class SimMember:
    """A member: the real client core, its truth (what its downloads really did), its log."""

    user_id: str
    client: ClientProtocol
    local: Room
    log: EventLog
    downloads: dict[str, _Download]
    conn: int | None = None
    started: bool = False
    content: dict[str, str] = field(default_factory=dict)  # piece -> sha256 of what it installed
    last_report: bytes = b""
    misdeeds: int = 0

    @property
    def lines(self) -> list[bytes]:
        """This member's log lines."""
        return _log_lines(self.log)


@dataclass
class _Intruder:
    """A connection that tries to get in as ``user_id`` with a bad ``answer`` kind."""

    user_id: str
    answer: str  # "forged" | "replayed"


class World:
    """The whole simulation state. :meth:`step` does one thing the seed chooses."""

    def __init__(
        self, rng: random.Random, room: RoomConfig, faults: frozenset[str], planted: frozenset[str]
    ) -> None:
        self.rng = rng
        self.room = room
        self.faults = faults
        self.step_no = 0
        self.host = SimHost(planted)
        self.members = {user: self._member(user) for user in room.users}
        self.queues: dict[tuple[int, str], deque[bytes]] = {}  # (conn, "up" | "down") -> frames
        self.owners: dict[int, SimMember | _Intruder] = {}
        self.next_conn = 0
        self.closing: set[int] = set()  # closed by the host: their last frames still arrive
        self.intrusions = 0
        self.answers_seen: list[bytes] = []  # valid answers, for replay attacks
        self.admitted: list[tuple[int, str]] = []  # (conn, user) the host let in
        self.admitted_owners: dict[int, SimMember | _Intruder] = {}

    @property
    def now(self) -> float:
        """The simulated clock."""
        return START + self.step_no * 0.01

    def _member(self, user: str) -> SimMember:
        client = ClientProtocol(self.room, user, insecure_key(user))
        local = Room()
        sizes = {k: self.room.content[k].size for k in self.room.piece_keys()}
        local.apply(ev.DownloadOpened(at=START, user_id=user, sizes=sizes))
        downloads = {key: self._plan() for key in self.room.piece_keys()}
        log = EventLog.in_memory(f"client/{self.room.room_id}/{user}")
        _log_lines(log).extend(log.take())  # the header
        return SimMember(user, client, local, log, downloads)

    def _plan(self) -> _Download:
        if "resolvable" not in self.faults:
            return _Download(plan=["ok"], cached=self.rng.random() < 0.2)
        outcomes = ["ok", "fail", "stall", "corrupt"]
        plan = [self.rng.choice(outcomes) for _ in range(self.rng.randint(1, 3))]
        return _Download(plan=plan, cached=self.rng.random() < 0.1)

    # -- the network ------------------------------------------------------------------------

    def connect(self, owner: SimMember | _Intruder) -> int:
        """Open a connection for ``owner``; the host gets a fresh nonce from the seed."""
        self.next_conn += 1
        conn = self.next_conn
        self.owners[conn] = owner
        self.queues[conn, "up"] = deque()
        self.queues[conn, "down"] = deque()
        self.host.core.connect(conn, self.rng.getrandbits(128).to_bytes(16, "big"))
        return conn

    def send_up(self, conn: int, frame: bytes) -> None:
        """A frame from a member or intruder toward the host."""
        if (conn, "up") in self.queues:
            self.queues[conn, "up"].append(frame)

    def host_output(self, out: HostOutput) -> None:
        """Record the host's events, then put its frames on the wire and close what it closes."""
        self.host.record(out)
        for conn, frame in out.sends:
            if (conn, "down") in self.queues:
                self.queues[conn, "down"].append(frame)
        for conn in out.closes:
            self.closing.add(conn)
            self.queues.pop((conn, "up"), None)
            if not self.queues.get((conn, "down")):
                self.close(conn, tell_host=False)

    def close(self, conn: int, tell_host: bool) -> None:
        """End a connection (frames in flight are lost)."""
        self.closing.discard(conn)
        self.queues.pop((conn, "up"), None)
        self.queues.pop((conn, "down"), None)
        owner = self.owners.pop(conn, None)
        if isinstance(owner, SimMember) and owner.conn == conn:
            owner.conn = None
        if tell_host:
            self.host_output(self.host.core.disconnect(conn, self.now))

    def deliver(self, key: tuple[int, str]) -> None:
        """Deliver the oldest frame on one direction of one connection."""
        conn, direction = key
        frame = self.queues[key].popleft()
        if direction == "up":
            self._to_host(conn, frame)
        else:
            self._to_owner(conn, frame)
            if conn in self.closing and not self.queues.get(key):
                self.close(conn, tell_host=False)  # the host closed it after these frames

    def _to_host(self, conn: int, frame: bytes) -> None:
        self.host_output(self.host.core.receive(conn, frame, self.now))
        hosted = self.host.core.rooms.get(self.room.room_id)
        if hosted is not None:
            for user, member_conn in hosted.members.items():
                if member_conn == conn and (conn, user) not in self.admitted:
                    self.admitted.append((conn, user))
                    self.admitted_owners[conn] = self.owners[conn]

    def _to_owner(self, conn: int, frame: bytes) -> None:
        owner = self.owners[conn]
        if isinstance(owner, _Intruder):
            self._intrude(conn, owner, frame)
            return
        out = owner.client.receive(frame)  # a ProtocolError here is a bug found
        owner.log.buffer(*out.events)
        owner.lines.extend(owner.log.take())
        for reply in out.sends:
            if b'"type":"answer"' in reply:
                self.answers_seen.append(reply)
            self.send_up(conn, reply)
        if out.joined:
            owner.started = True
            self._catch_up(owner)
        if out.closed or (out.refused is not None and out.refused.fatal):
            self.close(conn, tell_host=False)

    def _intrude(self, conn: int, intruder: _Intruder, frame: bytes) -> None:
        message = pr.decode_host_message(frame)
        if not isinstance(message, pr.Challenge):
            return
        if intruder.answer == "replayed" and self.answers_seen:
            self.send_up(conn, self.rng.choice(self.answers_seen))
            return
        message_bytes = pr.challenge_bytes(self.room.room_id, intruder.user_id, message.nonce)
        forged = insecure_key("mallory").sign(message_bytes)
        self.send_up(conn, pr.encode(pr.Answer(signature=base64.b64encode(forged).decode())))

    # -- members ----------------------------------------------------------------------------

    def _catch_up(self, member: SimMember) -> None:
        mine = member.local.snapshot().members[member.user_id].pieces
        for key, local in mine.items():
            host_view = member.client.host_view(key)
            for event in catch_up(member.user_id, key, host_view, local, self.now):
                self._report(member, event)

    def _report(self, member: SimMember, event: pr.ReportEvent) -> None:
        if member.conn is not None and member.client.phase == "joined":
            member.last_report = member.client.report(event)
            self.send_up(member.conn, member.last_report)

    def member_event(self, member: SimMember, event: pr.ReportEvent) -> None:
        """Something really happened to one of ``member``'s pieces: its truth, then the room."""
        member.local.apply(event)
        self._report(member, event)

    def rejoin(self, member: SimMember) -> None:
        """(Re)connect ``member``: a new connection and its hello."""
        member.conn = self.connect(member)
        self.send_up(member.conn, member.client.hello())

    def crash_host(self, tear: bool) -> None:
        """The host process dies; every connection is gone; the host restarts from its log and
        members will reconnect. With ``tear`` it dies while writing: it takes the next frame
        waiting for it, writes the events that frame caused with the last line torn, and sends
        none of its frames (a host commits its log before it sends)."""
        waiting = [key for key, queue in self.queues.items() if queue and key[1] == "up"]
        torn = False
        if tear and waiting:
            conn, _ = self.rng.choice(waiting)
            before = len(self.host.lines)
            self.host.record(
                self.host.core.receive(conn, self.queues[conn, "up"].popleft(), self.now)
            )
            torn = len(self.host.lines) > before
        for conn in list(self.owners):
            self.close(conn, tell_host=False)
        self.host_output(self.host.crash(torn, self.now))

    def misbehave(self, member: SimMember) -> None:
        """A member sends a report about another user's piece, or about a piece not in the room."""
        assert member.conn is not None
        member.misdeeds += 1
        user = self.rng.choice(sorted(self.room.users))
        key = self.rng.choice([*self.room.piece_keys(), "chars/not-in-room"])
        if user == member.user_id and key != "chars/not-in-room":
            key = "chars/not-in-room"
        event = ev.PieceStarted(at=self.now, user_id=user, piece=key)
        self.send_up(member.conn, pr.encode(pr.Report(event=event)))

    def duplicate(self, member: SimMember) -> None:
        """The member's last report arrives twice (once more, and only once)."""
        assert member.conn is not None
        self.send_up(member.conn, member.last_report)
        member.last_report = b""

    def intrude(self) -> None:
        """An impostor tries to join as an expected user (a forged or a replayed answer)."""
        self.intrusions += 1
        offline = sorted(m.user_id for m in self.members.values() if m.conn is None)
        user = self.rng.choice(offline or sorted(self.room.users))  # an impostor picks who is away
        intruder = _Intruder(user, self.rng.choice(["forged", "replayed"]))
        conn = self.connect(intruder)
        self.send_up(
            conn, pr.encode(pr.Hello(protocol=pr.PROTOCOL_VERSION, room=self.room, user_id=user))
        )

    # -- downloads --------------------------------------------------------------------------

    def work(self, member: SimMember, key: str) -> None:
        """One step of one piece's simulated download."""
        piece = member.local.members[member.user_id].pieces[key]
        download = member.downloads[key]
        user, at = member.user_id, self.now
        if piece.status == "not_started":
            self.member_event(member, ev.PieceStarted(at=at, user_id=user, piece=key))
            if download.cached:
                self._finish(member, key, "cache")
        elif piece.status == "error":
            download.retries -= 1
            download.plan, download.attempt = ["ok"], 0
            self.member_event(member, ev.PieceRetried(at=at, user_id=user, piece=key))
        elif download.attempt >= len(download.plan):
            failures = tuple(piece.failures)
            self.member_event(
                member, ev.PieceFailed(at=at, user_id=user, piece=key, failures=failures)
            )
        else:
            self._attempt(member, key, piece.done, piece.size)

    def _attempt(self, member: SimMember, key: str, done: int, size: int) -> None:
        download = member.downloads[key]
        outcome = download.plan[download.attempt]
        url = f"https://mirror-{download.attempt}.example/{key}"
        if outcome in ("ok", "corrupt") and done < size:
            step = max(1, size // self.rng.randint(1, 4))
            event = ev.PieceProgress(
                at=self.now, user_id=member.user_id, piece=key, done=min(size, done + step)
            )
            self.member_event(member, event)
        elif outcome == "ok":
            self._finish(member, key, url)
        else:
            reason = {
                "fail": "HTTP 404",
                "stall": "no data for 30 s",
                "corrupt": "sha256 mismatch",
            }[outcome]
            failure = ev.ResolvableFailure(index=download.attempt, url=url, reason=reason)
            download.attempt += 1
            self.member_event(
                member,
                ev.ResolvableFailed(
                    at=self.now, user_id=member.user_id, piece=key, failure=failure
                ),
            )

    def _finish(self, member: SimMember, key: str, source: str) -> None:
        member.content[key] = self.room.content[key].content_digest  # only verified bytes finish
        self.member_event(
            member, ev.PieceFinished(at=self.now, user_id=member.user_id, piece=key, source=source)
        )

    def pending_work(self, member: SimMember) -> list[str]:
        """The pieces ``member`` can make progress on now."""
        if not member.started:
            return []
        pieces = member.local.members[member.user_id].pieces
        return [
            key
            for key, piece in pieces.items()
            if piece.status in ("not_started", "in_progress")
            or (piece.status == "error" and member.downloads[key].retries > 0)
        ]
