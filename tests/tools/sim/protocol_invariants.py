"""What must hold after every step of the cores' world (:mod:`tests.tools.sim.protocol_world`).

Each check raises :class:`Violation` naming the invariant and the facts that break it. The cheap
ones run after every step; replaying every log from its bytes runs every
:data:`REPLAY_EVERY` steps and at the end.
"""

from __future__ import annotations

from matchlock.core.chain import LogDecoder
from matchlock.core.room import Room, replay
from matchlock.tools.sim.checks import Violation, check_machines
from tests.tools.sim.protocol_world import SimMember, World

__all__ = ["REPLAY_EVERY", "Violation", "check_end", "check_liveness", "check_logs", "check_step"]

REPLAY_EVERY = 25
"""Steps between full replays of every log."""


def _require(ok: bool, invariant: str, detail: str) -> None:
    if not ok:
        raise Violation(invariant, detail)


def check_step(world: World) -> None:
    """The invariants checked after every step."""
    hosted = world.host.core.rooms.get(world.room.room_id)
    if hosted is None:
        return
    room = hosted.room
    check_machines(room)  # the same rules the simulation of the real shells checks
    _admitted_are_signed(world)
    _finished_content_is_right(world, room)
    for member in world.members.values():
        _require(
            member.client.room.events <= len(hosted.history),
            "client-view-is-a-prefix",
            f"{member.user_id} holds {member.client.room.events} events, "
            f"the host {len(hosted.history)}",
        )
    if world.step_no % REPLAY_EVERY == 0:
        check_logs(world)


def check_end(world: World) -> None:
    """At the end of a closed room: every log replays, and every member saw the room close,
    or had said goodbye before losing its connection (then it cannot come back)."""
    check_logs(world)
    hosted = world.host.core.rooms[world.room.room_id]
    closed_at = next(i for i, e in enumerate(hosted.history) if e.type == "room_closed") + 1
    for member in world.members.values():
        seen = member.client.room.events
        said_goodbye = hosted.room.members[member.user_id].status == "goodbye"
        _require(
            seen >= closed_at or said_goodbye,
            "views-converge",
            f"{member.user_id} saw {seen} events but the room closed at event {closed_at}",
        )


def check_liveness(world: World) -> None:
    """At the end of a run whose room did not close: something must have stood in its way (a
    member still lacking a piece, or shut out for its own bad messages)."""
    check_logs(world)
    for member in world.members.values():
        pieces = member.local.members[member.user_id].pieces.values()
        if any(p.status != "finished" for p in pieces) or member.client.phase == "closed":
            return
    raise Violation(
        "room-completes",
        "every member has every piece and can connect, "
        f"yet the room is not closed after {world.step_no} steps",
    )


def _admitted_are_signed(world: World) -> None:
    for conn, user in world.admitted:
        owner = world.admitted_owners[conn]
        _require(
            isinstance(owner, SimMember) and owner.user_id == user,
            "members-proved-who-they-are",
            f"connection {conn} got in as {user!r} without {user}'s key",
        )


def _finished_content_is_right(world: World, room: Room) -> None:
    for user, member in room.members.items():
        for key, piece in member.pieces.items():
            if piece.status == "finished":
                got = world.members[user].content.get(key)
                _require(
                    got == world.room.content[key].sha256,
                    "finished-means-right-content",
                    f"{user} {key} finished with content {got}",
                )


def check_logs(world: World) -> None:
    """Every log replays from its bytes: the host's is its history and equals its live state,
    each member's replays to the member's view and is a prefix of the host's history."""
    hosted = world.host.core.rooms[world.room.room_id]
    host_events = list(LogDecoder("host.log").events(world.host.lines))
    _require(
        host_events == hosted.history,
        "host-log-is-the-history",
        "the host's log differs from its history",
    )
    _require(
        replay(host_events) == hosted.room.snapshot(),
        "replay-equals-live",
        "replaying the host log differs",
    )
    for member in world.members.values():
        mine = list(LogDecoder(f"{member.user_id}.log").events(member.lines))
        _require(
            replay(mine) == member.client.room.snapshot() if mine else True,
            "replay-equals-live",
            f"{member.user_id}'s log",
        )
        _require(
            mine == hosted.history[: len(mine)],
            "client-log-is-the-hosts",
            f"{member.user_id}'s log is not a prefix of the host's history",
        )
