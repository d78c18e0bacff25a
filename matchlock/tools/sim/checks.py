"""What must hold in a simulated room: while it runs, and at its end.

Each check raises :class:`Violation` naming the invariant and the facts that break it.

While the room runs (:func:`check_live`, every tick of the simulator): the live host's room
obeys the rules of its machines (a member is done only with every piece, the room is all done
only when everyone is, ...); no intruder was welcomed; no member was refused for good (a
correct member never is) and no ``join()`` failed but for content that cannot be had; and on
every member's connection the host's frames were what a correct host sends (:class:`Wire`:
after the welcome, every event in sequence, none skipped or repeated), whether or not the
member shell would have recovered from them; and no task of the host process ended by raising
(a handler that dies leaves its member with a connection nobody serves). With the nodes of a
cluster, each node's room and tasks are checked, the shared log must be one chain
(:func:`check_no_fork`: no two nodes ever appended at one position), and every event a member
heard must already be in it (:func:`check_heard`: no node relays an event before the stream
has stored it).

At the end (:func:`check_end`, issue 9's property): every member whose content can be had
finished, each with the same ``piece -> folder`` map; the host's log, read from its disk and
folded by the real fold, is a closed room where every member said goodbye, and ends with its
close; every event a member heard is in the host's log at the same place with the same
content; every member's own log replays and is a prefix of the host's; and no member was
refused anything it sent (:func:`check_refusals`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from matchlock.app.hosting import RoomHost
from matchlock.core import protocol as pr
from matchlock.core.chain import LogDecoder
from matchlock.core.errors import JoinRefusedError, LogCorruptError, RoomIncompleteError
from matchlock.core.events import Event, MemberRefused
from matchlock.core.room import Room, replay
from matchlock.tools.sim.loop import Process
from matchlock.tools.sim.network import Link
from matchlock.tools.sim.processes import MEMBER_LOCAL, SimMember

__all__ = [
    "REPORT_REFUSALS",
    "Hosting",
    "Violation",
    "Wire",
    "check_end",
    "check_heard",
    "check_live",
    "check_members",
    "check_no_fork",
    "check_refusals",
]

DATA_FRAME_TAG = b"\x01"
"""The first byte of a binary data frame of a peer transfer (JSON frames start with ``{``)."""

REPORT_REFUSALS = frozenset(
    {"illegal", "not-yours", "unknown-piece", "not-done", "read-only", "history-full"}
)
"""Refusal codes of what a joined member sends (a correct member earns none of them)."""


class Violation(Exception):
    """An invariant does not hold."""

    def __init__(self, invariant: str, detail: str) -> None:
        self.invariant = invariant
        super().__init__(detail)


def _require(ok: bool, invariant: str, detail: str) -> None:
    if not ok:
        raise Violation(invariant, detail)


class Wire:
    """Watches the frames the host delivers on members' connections (:meth:`frame` is the
    network's ``on_host_frame``); ``broken`` says what a correct host would not have sent."""

    def __init__(self) -> None:
        self.next: dict[int, int] = {}  # link number -> the sequence number of its next event
        self.broken: list[str] = []

    def frame(self, link: Link, data: bytes) -> None:
        """One frame from the host reached ``link``'s member end."""
        if link.member_end.process is None:  # the adversary's: it checks its own
            return
        if data[:1] == DATA_FRAME_TAG:  # a transfer's bytes (protocol 2): transfers.py checks them
            return
        try:
            message = pr.decode_host_message(data)
        except pr.MessageError as error:
            self.broken.append(f"link {link.number}: a frame that is no message: {error.reason}")
            return
        if isinstance(message, pr.Welcome):
            self.next[link.number] = message.since + len(message.events) + 1
        elif isinstance(message, pr.Relay):
            expected = self.next.get(link.number)
            if expected != message.seq:
                after = "before the welcome" if expected is None else f"after {expected - 1}"
                self.broken.append(f"link {link.number}: event {message.seq} came {after}")
            self.next[link.number] = message.seq + 1


class Hosting(Protocol):
    """The room's host machine (:class:`~matchlock.tools.sim.processes.SimHost`) or the nodes of
    a cluster (:class:`~matchlock.tools.sim.cluster.SimCluster`), as the checks see them."""

    def lines(self, room_id: str) -> list[bytes]:
        """The room's log where it is kept (the host's disk, the cluster's stream)."""
        ...

    def serving(self) -> Iterable[tuple[Process, RoomHost]]:
        """Each host process that runs, and its host."""
        ...


def check_live(host: Hosting, room_id: str, welcomed: Sequence[str], wire: Wire) -> None:
    """The invariants checked at every tick."""
    _require(not welcomed, "members-proved-who-they-are", "; ".join(welcomed))
    _require(not wire.broken, "the-host-speaks-the-protocol", "; ".join(wire.broken[:3]))
    for process, serving in host.serving():
        for task in process.tasks:  # a host task ends only when cancelled, never by raising
            if task.done() and not task.cancelled() and task.exception() is not None:
                name = getattr(task.get_coro(), "__qualname__", task.get_name())
                raise Violation("no-host-task-fails", f"{name} raised {task.exception()!r}")
        hosted = serving.core.rooms.get(room_id)
        if hosted is not None:
            check_machines(hosted.room)


def check_no_fork(host: Hosting, room_id: str) -> list[Event]:
    """The room's log is one chain: every line follows the one before it (two writers that
    both appended at one position would leave two lines of one sequence number). Returns its
    events."""
    try:
        return decode("the room's log", host.lines(room_id))
    except LogCorruptError as error:
        raise Violation("no-fork", str(error)) from None


def check_members(members: Sequence[SimMember], obtainable: bool) -> None:
    """No member refused for good, no ``join()`` failed (unless the content cannot be had)."""
    for member in members:
        error = member.error
        if error is None or (isinstance(error, RoomIncompleteError) and not obtainable):
            continue
        invariant = (
            "a-member-is-never-refused"
            if isinstance(error, JoinRefusedError)
            else "join-ends-with-the-room"
        )
        raise Violation(
            invariant, f"{member.user_id}'s join() raised {type(error).__name__}: {error}"
        )


def check_machines(room: Room) -> None:
    """A room's state obeys its machines' rules."""
    all_done = True
    for user, member in room.members.items():
        finished = all(p.status == "finished" for p in member.pieces.values())
        all_done = all_done and member.status == "done"
        if member.status in ("done", "goodbye"):
            _require(
                finished, "done-needs-every-piece", f"{user} is {member.status} without every piece"
            )
        if member.status == "goodbye":
            _require(
                room.status in ("goodbye", "closed"),
                "goodbye-after-all-done",
                f"{user} said goodbye in a room {room.status}",
            )
    if room.status in ("all_done", "goodbye", "closed"):
        unfinished = [
            u
            for u, m in room.members.items()
            if any(p.status != "finished" for p in m.pieces.values())
        ]
        _require(
            not unfinished,
            "room-done-needs-everyone",
            f"room {room.status} but {unfinished} lack pieces",
        )
    if room.status == "open":
        _require(
            not all_done, "room-done-when-everyone-is", "every member is done but the room is open"
        )


def decode(name: str, lines: Sequence[bytes]) -> list[Event]:
    """The events of a log's lines (a torn tail left out), as every reader decodes them."""
    return list(LogDecoder(name).events(lines)) if lines else []


def check_end(
    host: Hosting, room_id: str, members: Sequence[SimMember], injected: dict[str, int]
) -> None:
    """Issue 9's property, once every member's ``join()`` returned."""
    maps = {m.user_id: m.folders for m in members}
    _require(
        all(folders is not None for folders in maps.values()),
        "every-member-finishes",
        f"no result for {sorted(u for u, f in maps.items() if f is None)}",
    )
    first = next(iter(maps.values()))
    _require(
        all(folders == first for folders in maps.values()),
        "same-piece-folders",
        f"the members' piece -> folder maps differ: {maps}",
    )
    history = decode("host.log", host.lines(room_id))
    state = replay(history)
    _require(state.status == "closed", "host-log-closes", f"the host's log ends {state.status}")
    _require(
        history[-1].type == "room_closed",
        "closed-log-ends-with-its-close",
        f"event {len(history)} of the host's log is a {history[-1].type} after room_closed",
    )
    gone = [u for u, m in state.members.items() if m.status != "goodbye"]
    _require(not gone, "everyone-said-goodbye", f"{gone} did not say goodbye in the host's log")
    check_refusals(history, members, injected)
    check_heard(history, members)
    for member in members:
        mine = room_events(decode(f"{member.user_id}.log", member.store.lines))
        _require(
            mine == history[: len(mine)],
            "member-log-is-the-hosts",
            f"{member.user_id}'s log is not a prefix of the host's history",
        )


def check_refusals(
    history: Sequence[Event], members: Sequence[SimMember], injected: dict[str, int]
) -> None:
    """No member was refused what it sent. A member on whose connections the adversary put
    frames is exempt: it hears refusals of frames it never sent, and cannot tell them from
    refusals of its own (it must still finish, which :func:`check_end` checks)."""
    for member in members:
        if injected.get(member.user_id, 0):
            continue
        refused = [
            event
            for event in history
            if isinstance(event, MemberRefused)
            and event.user_id == member.user_id
            and event.code in REPORT_REFUSALS
        ]
        _require(
            not refused,
            "a-correct-member-is-never-refused",
            f"the host refused {member.user_id} {len(refused)} time(s), first "
            f"{refused[0].code}: {refused[0].reason}"
            if refused
            else "",
        )


def check_heard(history: Sequence[Event], members: Sequence[SimMember]) -> None:
    """Every event a member heard is in the host's log, at the same place, the same (what a
    host sends it has written first, so this holds at any moment, not only at the end)."""
    for member in members:
        _heard_is_the_hosts(member, history)


def room_events(events: Sequence[Event]) -> list[Event]:
    """``events`` without the member-local ones (:data:`MEMBER_LOCAL`): what a member's log
    shares with the host's."""
    return [event for event in events if event.type not in MEMBER_LOCAL]


def _heard_is_the_hosts(member: SimMember, history: Sequence[Event]) -> None:
    for number, life in enumerate(member.incarnations, start=1):
        heard = room_events(life.heard)
        span = history[life.known : life.known + len(heard)]
        for offset, (heard_event, logged) in enumerate(zip(heard, span, strict=False)):
            _require(
                heard_event == logged,
                "heard-is-in-the-host-log",
                f"{member.user_id} (process {number}) heard event {life.known + offset + 1} "
                f"as {heard_event.type}, the host's log holds {logged.type}",
            )
        _require(
            len(span) == len(heard),
            "heard-is-in-the-host-log",
            f"{member.user_id} (process {number}) heard {life.known + len(heard)} events, "
            f"the host's log holds {len(history)}",
        )
