"""The host core's part in a cluster (:mod:`matchlock.core.following`), two host cores standing
for two nodes and a list standing for the shared log: applying what another node appended,
deciding again what the log refused, forgetting a room, and a member moving between nodes."""

from __future__ import annotations

from matchlock.core import events as ev
from matchlock.core import protocol as pr
from matchlock.core.host import HostProtocol
from tests.core.host_peers import CONFIG, Net

ROOM = CONFIG.room_id


def started(user: str) -> ev.PieceStarted:
    """``user`` started the room's one piece."""
    return ev.PieceStarted(at=0, user_id=user, piece="chars/kfm")


def progress(user: str, done: int) -> ev.PieceProgress:
    """``user`` holds ``done`` bytes of the room's one piece."""
    return ev.PieceProgress(at=0, user_id=user, piece="chars/kfm", done=done)


def two_nodes() -> tuple[Net, Net, list[ev.Event]]:
    """Node a with alice, node b with bob, both holding the room as the log does."""
    a, b = Net(), Net()
    a.member("alice")
    log = list(a.recorded)
    assert b.take(b.host.follow(ROOM, log, 1.0)).events == []
    b.member("bob")
    log += b.recorded
    a.take(a.host.follow(ROOM, b.recorded, 1.0))
    return a, b, log


def test_follow_relays_another_nodes_events_to_this_nodes_members_and_records_none() -> None:
    a, b, log = two_nodes()
    alice = a.peers[0]
    assert [e.type for e in log] == ["room_opened", "member_joined", "member_joined"]
    assert alice.relayed()[-1] == log[-1]  # bob's join, as b recorded it
    assert a.recorded == log[:2]  # a recorded only its own
    assert a.host.rooms[ROOM].room.snapshot() == b.host.rooms[ROOM].room.snapshot()


def test_a_rebase_decides_this_nodes_event_again_after_the_other_nodes() -> None:
    a, b, log = two_nodes()
    alice, bob = a.peers[0], b.peers[0]
    alice.report(started("alice"))  # a's, refused by the log: b appended first
    bob.report(started("bob"))
    theirs = b.recorded[-1:]
    alice.got.clear()
    heard, decided = a.host.rebase(ROOM, len(log), theirs, 2.0)
    a.take(heard)
    assert alice.relayed() == theirs  # bob's start first, as the log holds it
    a.take(decided)
    assert [e.type for _, e, _ in decided.events] == ["piece_started"]
    assert alice.relayed()[-1] == decided.events[0].event
    assert [m.seq for m in alice.got if isinstance(m, pr.Relay)] == [len(log) + 1, len(log) + 2]


def test_a_rebase_refuses_with_the_reason_what_the_other_nodes_events_made_illegal() -> None:
    a, _, log = two_nodes()
    alice = a.peers[0]
    alice.report(started("alice"))
    log.append(a.recorded[-1])
    alice.report(progress("alice", 50))  # refused by the log, which holds 80 from elsewhere
    theirs = [progress("alice", 80)]
    heard, decided = a.host.rebase(ROOM, len(log), theirs, 2.0)
    a.take(heard)
    a.take(decided)
    refusal = alice.refused()
    assert refusal.code == "illegal" and "another node recorded first" in refusal.reason
    assert [e.type for _, e, _ in decided.events] == ["member_refused"]
    assert a.host.rooms[ROOM].room.members["alice"].pieces["chars/kfm"].done == 80


def test_a_member_welcomed_on_refused_events_is_welcomed_again_after_the_others() -> None:
    a, b = Net(), Net()
    b.member("bob")
    log = list(b.recorded)
    a.take(a.host.follow(ROOM, log, 1.0))
    alice = a.peer("alice")  # joins a, whose member_joined the log refuses: b appended first
    alice.hello()
    alice.answer()
    b.peers[0].report(started("bob"))
    theirs = b.recorded[len(log) :]
    alice.got.clear()  # the shell never sent the first welcome
    heard, decided = a.host.rebase(ROOM, len(log), theirs, 2.0)
    a.take(heard)
    a.take(decided)
    welcome = alice.got[0]
    assert isinstance(welcome, pr.Welcome) and welcome.events == [*log, *theirs]
    assert [e.type for _, e, _ in decided.events] == ["member_joined"]
    assert alice.relayed() == [decided.events[0].event]


def test_a_member_joining_through_another_node_is_disconnected_there_first() -> None:
    a, b, _ = two_nodes()
    moved = b.member("alice")  # node a died, say; its alice is still connected in the log
    assert [e.type for e in b.recorded[-2:]] == ["member_disconnected", "member_joined"]
    assert not moved.closed
    out = a.take(a.host.follow(ROOM, b.recorded[-2:], 3.0))
    assert a.peers[0].closed and out.events == []  # a's alice moved: its connection is stale
    assert "alice" not in a.host.rooms[ROOM].members


def test_forget_drops_the_room_and_its_members_recording_nothing() -> None:
    a, _, _ = two_nodes()
    host: HostProtocol = a.host
    alice = a.peers[0]
    assert host.forget(ROOM) == [alice.conn]
    assert ROOM not in host.rooms
    assert host.disconnect(alice.conn, 4.0).events == []  # its handler ends: nothing recorded


def test_forget_also_drops_a_handshake_under_way_for_the_room() -> None:
    """A connection challenged for the room when the node forgets it is returned too (to be
    closed: it joins again), never left to find no room at its answer (found by
    ``matchlock simulate --seed 0 --faults delay,partition --nodes 2``)."""
    a, _, _ = two_nodes()
    carol = a.peer("bob")  # bob again, say, through this node: challenged, not answered
    carol.hello()
    assert isinstance(carol.got[-1], pr.Challenge)
    assert set(a.host.forget(ROOM)) == {a.peers[0].conn, carol.conn}
    assert carol.send(b'{"type":"answer","signature":"AAAA"}').sends == []  # nothing to answer
