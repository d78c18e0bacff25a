"""Rooms shared by several host nodes: the sans-IO half of what lets any node serve any room.

Several nodes may hold one room, each with some of its members connected, all appending to one
shared log (:mod:`matchlock.store.nats`) that refuses an append made at a stale position. The
node's shell calls three things here, through :class:`~matchlock.core.host.HostProtocol`:

- :func:`follow`: events another node appended (already in the log, in its order) are applied
  to this node's copy of the room and relayed to this node's members; nothing is recorded (they
  are recorded already). A member the log shows joining or leaving through another node while
  connected here has moved: its connection here is stale and is closed. The shell loads a room
  it does not hold the same way, with the room's whole log.
- :func:`rebase`: the log refused this node's append because another node appended first. The
  shell re-read the log; the room is rebuilt from the ``kept`` events both agree on plus the
  other node's, then every event this node had recorded since is decided again on top of them,
  by the same rules: recorded (and relayed) when still legal, or refused to its member with the
  reason when not. Events the rules derive (a member done, the room all done or closed) are
  derived again rather than copied. This node's frames about the room that were still unsent
  are the shell's to drop; what members must hear is all in the output.
- :func:`forget`: this node stops serving a room (it lost the log): the room and its members'
  connections are dropped without recording anything; members join again, here or elsewhere.

Nothing here knows about nodes, streams or networks: only rooms, events and connections.

Pure core: no sockets, no clock, no randomness, no files.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from matchlock.core import events as ev
from matchlock.core import protocol as pr
from matchlock.core.errors import IllegalEventError
from matchlock.core.hosted import ConnId, HostedRoom, HostOutput, Share
from matchlock.core.machines import STATE_TRIGGERED
from matchlock.core.room import next_due

if TYPE_CHECKING:
    from matchlock.core.host import HostProtocol

__all__ = ["follow", "forget", "rebase"]

DERIVED = frozenset(rule.event for rule in STATE_TRIGGERED)
"""Event types the host derives from the state (decided again, never copied, by a rebase)."""

_MOVES = ("member_joined", "member_disconnected")

_NOT_ASKED = (ev.MemberJoined, ev.MemberDisconnected, ev.MemberRefused)
"""Events a member did not ask for (no refusal answers them when a rebase finds one illegal)."""


def follow(host: HostProtocol, room_id: str, events: Sequence[ev.Event], at: float) -> HostOutput:
    """Apply ``events``, recorded by another node, to room ``room_id`` (made when this node
    does not hold it yet: then ``events`` is its whole log) and relay them to this node's
    members. Raises :class:`~matchlock.core.errors.IllegalEventError` when one is illegal (the
    shell's copy of the room is out of step with the log: it must forget the room)."""
    hosted = host.rooms.get(room_id)
    if hosted is None:
        hosted = host.rooms[room_id] = HostedRoom()
    out = HostOutput()
    _apply(host, hosted, events, out)
    _ended(host, hosted, out)
    return out


def _apply(
    host: HostProtocol, hosted: HostedRoom, events: Sequence[ev.Event], out: HostOutput
) -> None:
    """Record ``events`` (already in the log) into ``hosted``: relayed, not to be recorded."""
    relayed = HostOutput()
    for event in events:
        user = getattr(event, "user_id", None)
        if event.type in _MOVES and user in hosted.members:  # it moved to another node
            conn = hosted.members.pop(user)
            host.drop_connection(conn)
            relayed.closes.append(conn)
        hosted.record(event, relayed)
    out.sends += relayed.sends
    out.closes += relayed.closes


def _ended(host: HostProtocol, hosted: HostedRoom, out: HostOutput) -> None:
    if hosted.ended:
        hosted.told.update(hosted.members)
        for conn in hosted.members.values():
            host.drop_connection(conn)
            out.closes.append(conn)
        hosted.members.clear()


def rebase(
    host: HostProtocol, room_id: str, kept: int, theirs: Sequence[ev.Event], at: float
) -> tuple[HostOutput, HostOutput]:
    """Room ``room_id``'s log holds its first ``kept`` events as this node has them, then
    ``theirs`` (another node's), and refused the rest of this node's history: rebuild the
    room on the log and decide this node's events again after ``theirs`` (see the module
    docstring). Returns what members hear of ``theirs`` (recorded already: frames only) and
    what was decided again (to record, then send). A member welcomed after event ``kept``
    (its welcome was never sent) is welcomed again after ``theirs``, in the first."""
    old = host.rooms[room_id]
    mine = old.history[kept:]
    fresh = {user: conn for user, conn in old.members.items() if host.welcomed_at(conn) >= kept}
    rebuilt = host.rooms[room_id] = HostedRoom()
    _apply(host, rebuilt, old.history[:kept], HostOutput())  # nobody is connected yet
    for user, share in old.shares.items():
        rebuilt.shares.setdefault(user, Share()).refusals = share.refusals
    rebuilt.told = old.told
    heard = HostOutput()
    rebuilt.members = {user: conn for user, conn in old.members.items() if user not in fresh}
    _apply(host, rebuilt, theirs, heard)
    for user, conn in fresh.items():
        if not rebuilt.ended and host.welcome_again(conn, heard):
            rebuilt.members[user] = conn
        else:
            host.drop_connection(conn)
            heard.closes.append(conn)
    if rebuilt.ended:
        _ended(host, rebuilt, heard)
        return heard, HostOutput()
    out = HostOutput()
    for event in mine:
        _redo(host, rebuilt, event, at, out)
    for user in sorted({getattr(event, "user_id", "") for event in mine}):
        while (due := next_due(rebuilt.room, user, at)) is not None:
            rebuilt.record(due, out)
    _ended(host, rebuilt, out)
    return heard, out


def _redo(
    host: HostProtocol, rebuilt: HostedRoom, event: ev.Event, at: float, out: HostOutput
) -> None:
    """Decide ``event`` (this node's, refused by the log) again on the rebuilt room."""
    if event.type in DERIVED:
        return  # derived again from the new state
    if isinstance(event, ev.RoomOpened) and rebuilt.history:
        return  # another node opened the room first
    user = getattr(event, "user_id", "")
    conn = rebuilt.members.get(user)
    try:
        rebuilt.record(event, out)
    except IllegalEventError as error:
        if conn is not None and not isinstance(event, _NOT_ASKED):
            why = f"another node recorded first, and now: {error}"
            host.refuse_member(conn, at, out, code="illegal", reason=why)
        return
    if isinstance(event, ev.MemberRefused) and conn is not None:  # its frame was not sent
        refused = pr.Refused(code=event.code, reason=event.reason, fatal=False)
        out.sends.append((conn, pr.encode(refused)))


def forget(host: HostProtocol, room_id: str) -> list[ConnId]:
    """Stop serving room ``room_id`` here: drop it and its members' connections (returned,
    for the shell to close) without recording anything."""
    hosted = host.rooms.pop(room_id, None)
    if hosted is None:
        return []
    conns = list(hosted.members.values())
    for conn in conns:
        host.drop_connection(conn)
    return conns
